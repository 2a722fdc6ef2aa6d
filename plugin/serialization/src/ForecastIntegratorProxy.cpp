// XmlSerializer support: the proxy is registered when the library is loaded, so that
// XmlSerializer::serialize/deserialize (and Python's openmm.XmlSerializer) round-trip a ForecastIntegrator.
#include "ForecastIntegrator.h"
#include "ForecastKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include "openmm/serialization/SerializationProxy.h"
#include <typeinfo>

using namespace ForecastPlugin;
using namespace OpenMM;

namespace {

const int VERSION = 1;

class ForecastIntegratorProxy : public SerializationProxy {
public:
    ForecastIntegratorProxy() : SerializationProxy("ForecastIntegrator") {
    }
    void serialize(const void* object, SerializationNode& node) const override {
        const ForecastIntegrator& integrator = *reinterpret_cast<const ForecastIntegrator*>(object);
        node.setIntProperty("version", VERSION);
        node.setStringProperty("forecasterFile", integrator.getForecasterFile());
        node.setDoubleProperty("stepSize", integrator.getStepSize());
        node.setDoubleProperty("constraintTolerance", integrator.getConstraintTolerance());
        node.setIntProperty("integrationForceGroups", integrator.getIntegrationForceGroups());
        node.setDoubleProperty("temperature", integrator.getTemperature());
        node.setDoubleProperty("friction", integrator.getFriction());
        node.setIntProperty("randomSeed", integrator.getRandomNumberSeed());
        node.setIntProperty("segmentSteps", integrator.getSegmentSteps());
        node.setIntProperty("jumpsPerCycle", integrator.getJumpsPerCycle());
        node.setIntProperty("maxFrames", integrator.getMaxFrames());
        node.setIntProperty("initialFrames", integrator.getInitialFrames());
        node.setIntProperty("adaptSpan", integrator.getAdaptSpan());
        node.setIntProperty("growAfter", integrator.getGrowAfter());
        node.setDoubleProperty("energyTolerance", integrator.getEnergyTolerance());
        node.setDoubleProperty("driftTolerance", integrator.getDriftTolerance());
        node.setDoubleProperty("temperatureSigmas", integrator.getTemperatureSigmas());
        node.setIntProperty("reequilibrationSteps", integrator.getReequilibrationSteps());
        node.setBoolProperty("metropolis", integrator.getMetropolis());
        node.setDoubleProperty("bondStretch", integrator.getBondStretch());
        node.setBoolProperty("thermostatJumps", integrator.getThermostatJumps());
        node.setIntProperty("thermostatted", integrator.getThermostatted());
    }
    void* deserialize(const SerializationNode& node) const override {
        if (node.getIntProperty("version") != VERSION)
            throw OpenMMException("ForecastIntegrator: unsupported XML version " + std::to_string(node.getIntProperty("version")));
        ForecastIntegrator* integrator = new ForecastIntegrator(node.getStringProperty("forecasterFile"), node.getDoubleProperty("temperature"),
                                                                node.getDoubleProperty("friction"), node.getDoubleProperty("stepSize"));
        try {
            integrator->setConstraintTolerance(node.getDoubleProperty("constraintTolerance"));
            integrator->setIntegrationForceGroups(node.getIntProperty("integrationForceGroups"));
            integrator->setRandomNumberSeed(node.getIntProperty("randomSeed"));
            integrator->setSegmentSteps(node.getIntProperty("segmentSteps"));
            integrator->setJumpsPerCycle(node.getIntProperty("jumpsPerCycle"));
            integrator->setMaxFrames(node.getIntProperty("maxFrames"));
            integrator->setInitialFrames(node.getIntProperty("initialFrames"));
            integrator->setAdaptSpan(node.getIntProperty("adaptSpan"));
            integrator->setGrowAfter(node.getIntProperty("growAfter"));
            integrator->setEnergyTolerance(node.getDoubleProperty("energyTolerance"));
            integrator->setDriftTolerance(node.getDoubleProperty("driftTolerance"));
            integrator->setTemperatureSigmas(node.getDoubleProperty("temperatureSigmas"));
            integrator->setReequilibrationSteps(node.getIntProperty("reequilibrationSteps"));
            integrator->setMetropolis(node.getBoolProperty("metropolis"));
            integrator->setBondStretch(node.getDoubleProperty("bondStretch"));
            integrator->setThermostatJumps(node.getBoolProperty("thermostatJumps"));
            integrator->setThermostatted(node.getIntProperty("thermostatted"));
        }
        catch (...) {
            delete integrator;
            throw;
        }
        return integrator;
    }
};

struct Registration {
    Registration() {
        SerializationProxy::registerProxy(typeid(ForecastIntegrator), new ForecastIntegratorProxy());
        registerForecastKernels();
    }
} registration;

} // namespace

// Entry point when the library is loaded as an OpenMM plugin (Platform::loadPluginLibrary).
extern "C" __attribute__((visibility("default"))) void registerKernelFactories() {
    registerForecastKernels();
}
