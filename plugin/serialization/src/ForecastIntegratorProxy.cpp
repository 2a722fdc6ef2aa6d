// XmlSerializer support: the proxy is registered when the library is loaded, so that
// XmlSerializer::serialize/deserialize (and Python's openmm.XmlSerializer) round-trip a ForecastIntegrator.
// Deserialisation checks every attribute's type and range and names the attribute it refuses.
#include "ForecastIntegrator.h"
#include "ForecastKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include "openmm/serialization/SerializationProxy.h"
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <set>
#include <typeinfo>

using namespace ForecastPlugin;
using namespace OpenMM;
using std::string;

namespace {

const int VERSION = 2;

const std::set<string> ATTRIBUTES{
    "type", "version", "forecasterFile", "stepSize", "constraintTolerance", "integrationForceGroups", "temperature", "friction",
    "randomSeed", "segmentSteps", "jumpsPerCycle", "maxFrames", "initialFrames", "adaptSpan", "growAfter", "energyTolerance",
    "driftTolerance", "temperatureSigmas", "reequilibrationSteps", "acceptance", "allowInexactMetropolis", "velocityMemory", "jump",
    "surrogateStepSize", "surrogatePlatform", "bondStretch", "thermostatJumps", "thermostatted"};

[[noreturn]] void refuse(const string& name, const string& value, const string& expected) {
    throw OpenMMException("ForecastIntegrator XML: attribute " + name + "=\"" + value + "\" is not " + expected);
}

string text(const SerializationNode& node, const string& name) {
    if (!node.hasProperty(name))
        throw OpenMMException("ForecastIntegrator XML: attribute " + name + " is missing");
    return node.getStringProperty(name);
}

long long integer(const SerializationNode& node, const string& name, long long minimum, long long maximum) {
    const string value = text(node, name);
    char* end = nullptr;
    errno = 0;
    long long result = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || errno == ERANGE)
        refuse(name, value, "an integer");
    if (result < minimum || result > maximum)
        refuse(name, value, "an integer in [" + std::to_string(minimum) + ", " + std::to_string(maximum) + "]");
    return result;
}

double number(const SerializationNode& node, const string& name) {
    const string value = text(node, name);
    char* end = nullptr;
    double result = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !std::isfinite(result))
        refuse(name, value, "a finite number");
    return result;
}

bool boolean(const SerializationNode& node, const string& name) {
    const string value = text(node, name);
    if (value == "1" || value == "true")
        return true;
    if (value == "0" || value == "false")
        return false;
    refuse(name, value, "a boolean (0 or 1)");
}

/** The integrator's own setters check the ranges; their messages name the parameter. */
template <class Setter>
void set(const string& name, Setter setter) {
    try {
        setter();
    }
    catch (const OpenMMException& error) {
        throw OpenMMException(string("ForecastIntegrator XML: attribute ") + name + ": " + error.what());
    }
}

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
        node.setStringProperty("acceptance", integrator.getAcceptance());
        node.setBoolProperty("allowInexactMetropolis", integrator.getAllowInexactMetropolis());
        node.setDoubleProperty("velocityMemory", integrator.getVelocityMemory());
        node.setDoubleProperty("jump", integrator.getJump());
        node.setDoubleProperty("surrogateStepSize", integrator.getSurrogateStepSize());
        node.setStringProperty("surrogatePlatform", integrator.getSurrogatePlatform());
        node.setDoubleProperty("bondStretch", integrator.getBondStretch());
        node.setBoolProperty("thermostatJumps", integrator.getThermostatJumps());
        node.setIntProperty("thermostatted", integrator.getThermostatted());
    }
    void* deserialize(const SerializationNode& node) const override {
        for (const auto& property : node.getProperties())
            if (ATTRIBUTES.count(property.first) == 0)
                throw OpenMMException("ForecastIntegrator XML: unknown attribute " + property.first);
        long long version = integer(node, "version", 0, INT_MAX);
        if (version != VERSION)
            throw OpenMMException("ForecastIntegrator XML: unsupported version " + std::to_string(version) + " (this plugin reads " +
                                  std::to_string(VERSION) + ")");
        double temperature = number(node, "temperature"), friction = number(node, "friction"), stepSize = number(node, "stepSize");
        ForecastIntegrator* integrator = nullptr;
        set("temperature, friction or stepSize", [&] {
            integrator = new ForecastIntegrator(text(node, "forecasterFile"), temperature, friction, stepSize);
        });
        try {
            double tolerance = number(node, "constraintTolerance");
            if (!(tolerance > 0))
                refuse("constraintTolerance", text(node, "constraintTolerance"), "a number > 0");
            integrator->setConstraintTolerance(tolerance);
            int groups = (int) integer(node, "integrationForceGroups", INT_MIN, INT_MAX);
            set("integrationForceGroups", [&] { integrator->setIntegrationForceGroups(groups); });
            integrator->setRandomNumberSeed((int) integer(node, "randomSeed", 0, INT_MAX));
            set("segmentSteps", [&] { integrator->setSegmentSteps((int) integer(node, "segmentSteps", 0, INT_MAX)); });
            set("jumpsPerCycle", [&] { integrator->setJumpsPerCycle((int) integer(node, "jumpsPerCycle", 1, INT_MAX)); });
            set("maxFrames", [&] { integrator->setMaxFrames((int) integer(node, "maxFrames", 0, INT_MAX)); });
            set("initialFrames", [&] { integrator->setInitialFrames((int) integer(node, "initialFrames", 0, INT_MAX)); });
            set("adaptSpan", [&] { integrator->setAdaptSpan((int) integer(node, "adaptSpan", -1, 1)); });
            set("growAfter", [&] { integrator->setGrowAfter((int) integer(node, "growAfter", 1, INT_MAX)); });
            set("energyTolerance", [&] { integrator->setEnergyTolerance(number(node, "energyTolerance")); });
            set("driftTolerance", [&] { integrator->setDriftTolerance(number(node, "driftTolerance")); });
            set("temperatureSigmas", [&] { integrator->setTemperatureSigmas(number(node, "temperatureSigmas")); });
            set("reequilibrationSteps", [&] { integrator->setReequilibrationSteps((int) integer(node, "reequilibrationSteps", 0, INT_MAX)); });
            set("acceptance", [&] { integrator->setAcceptance(text(node, "acceptance")); });
            integrator->setAllowInexactMetropolis(boolean(node, "allowInexactMetropolis"));
            set("velocityMemory", [&] { integrator->setVelocityMemory(number(node, "velocityMemory")); });
            set("jump", [&] { integrator->setJump(number(node, "jump")); });
            set("surrogateStepSize", [&] { integrator->setSurrogateStepSize(number(node, "surrogateStepSize")); });
            set("surrogatePlatform", [&] { integrator->setSurrogatePlatform(text(node, "surrogatePlatform")); });
            set("bondStretch", [&] { integrator->setBondStretch(number(node, "bondStretch")); });
            integrator->setThermostatJumps(boolean(node, "thermostatJumps"));
            set("thermostatted", [&] { integrator->setThermostatted((int) integer(node, "thermostatted", -1, 1)); });
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
