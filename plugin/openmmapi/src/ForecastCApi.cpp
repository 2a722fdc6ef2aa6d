// A small C API for bindings that hold an OpenMM::Integrator* (Python: int(integrator.this) of the SWIG object).
#include "ForecastIntegrator.h"
#include "openmm/serialization/XmlSerializer.h"
#include <cstring>
#include <exception>
#include <sstream>
#include <string>

using namespace ForecastPlugin;

namespace {
long long copyOut(const std::string& text, char* buffer, long long size) {
    if (buffer != nullptr && size > 0) {
        size_t n = std::min<size_t>(text.size(), size - 1);
        std::memcpy(buffer, text.data(), n);
        buffer[n] = '\0';
    }
    return text.size();
}
} // namespace

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
    return copyOut(forecast->getStatistics().toJson(), buffer, size);
}

/**
 * The XML of a ForecastIntegrator with every option at its default (the defaults' one source for bindings: they
 * fill in the options they are not given).  Returns the length of the text, as openmm_forecast_statistics_json.
 */
__attribute__((visibility("default"))) long long openmm_forecast_default_xml(char* buffer, long long size) {
    ForecastIntegrator integrator("", 300.0, 1.0, 0.001);
    std::stringstream text;
    OpenMM::XmlSerializer::serialize<OpenMM::Integrator>(&integrator, "Integrator", text);
    return copyOut(text.str(), buffer, size);
}

}
