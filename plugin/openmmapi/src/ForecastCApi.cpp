// A small C API for bindings that hold an OpenMM::Integrator* (Python: int(integrator.this) of the SWIG object).
#include "ForecastIntegrator.h"
#include <cstring>
#include <exception>
#include <string>

using namespace ForecastPlugin;

extern "C" {

/**
 * Write the statistics of the ForecastIntegrator at integrator (an OpenMM::Integrator*) as JSON into buffer.
 * Returns the length of the JSON text (call again with a larger buffer if it is >= size), or -1 when integrator
 * is not a ForecastIntegrator.
 */
__attribute__((visibility("default"))) long long openmm_forecast_statistics_json(void* integrator, char* buffer, long long size) {
    auto* forecast = dynamic_cast<ForecastIntegrator*>(static_cast<OpenMM::Integrator*>(integrator));
    if (forecast == nullptr)
        return -1;
    std::string json = forecast->getStatistics().toJson();
    if (buffer != nullptr && size > 0) {
        size_t n = std::min<size_t>(json.size(), size - 1);
        std::memcpy(buffer, json.data(), n);
        buffer[n] = '\0';
    }
    return json.size();
}

}
