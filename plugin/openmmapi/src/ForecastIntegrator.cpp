#include "ForecastIntegrator.h"
#include "ForecastKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/kernels.h"
#include <cmath>
#include "openmm/internal/ContextImpl.h"

using namespace ForecastPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {
void require(bool condition, const string& message) {
    if (!condition)
        throw OpenMMException("ForecastIntegrator: " + message);
}
} // namespace

ForecastIntegrator::ForecastIntegrator(const string& forecasterFile, double temperature, double frictionCoeff, double stepSize)
    : forecasterFile(forecasterFile) {
    setTemperature(temperature);
    setFriction(frictionCoeff);
    require(stepSize > 0 && std::isfinite(stepSize), "stepSize must be a finite number > 0 ps, got " + std::to_string(stepSize));
    setStepSize(stepSize);
    setConstraintTolerance(1e-5);
}

void ForecastIntegrator::setTemperature(double temp) {
    require(temp > 0 && std::isfinite(temp), "temperature must be > 0 K, got " + std::to_string(temp));
    temperature = temp;
}

void ForecastIntegrator::setFriction(double coeff) {
    require(coeff >= 0 && std::isfinite(coeff), "friction must be >= 0 /ps, got " + std::to_string(coeff));
    friction = coeff;
}

void ForecastIntegrator::setSegmentSteps(int steps) {
    require(steps >= 0, "segmentSteps must be >= 0 (0: one stride), got " + std::to_string(steps));
    segmentSteps = steps;
}

void ForecastIntegrator::setJumpsPerCycle(int jumps) {
    require(jumps >= 1, "jumpsPerCycle must be >= 1, got " + std::to_string(jumps));
    jumpsPerCycle = jumps;
}

void ForecastIntegrator::setMaxFrames(int frames) {
    require(frames >= 0, "maxFrames must be >= 0 (0: the forecaster's), got " + std::to_string(frames));
    maxFrames = frames;
}

void ForecastIntegrator::setInitialFrames(int frames) {
    require(frames >= 0, "initialFrames must be >= 0 (0: maxFrames), got " + std::to_string(frames));
    initialFrames = frames;
}

void ForecastIntegrator::setAdaptSpan(int mode) {
    require(mode >= -1 && mode <= 1, "adaptSpan must be -1 (default), 0 or 1, got " + std::to_string(mode));
    adaptSpan = mode;
}

void ForecastIntegrator::setGrowAfter(int jumps) {
    require(jumps >= 1, "growAfter must be >= 1, got " + std::to_string(jumps));
    growAfter = jumps;
}

void ForecastIntegrator::setEnergyTolerance(double kT) {
    require(kT > 0 && std::isfinite(kT), "energyTolerance must be a finite number > 0 (in kT), got " + std::to_string(kT));
    energyTolerance = kT;
}

void ForecastIntegrator::setDriftTolerance(double kT) {
    require(kT > 0 && std::isfinite(kT), "driftTolerance must be a finite number > 0 (in kT), got " + std::to_string(kT));
    driftTolerance = kT;
}

void ForecastIntegrator::setTemperatureSigmas(double sigmas) {
    require(std::isfinite(sigmas), "temperatureSigmas must be a finite number (<= 0 disables the check), got " + std::to_string(sigmas));
    temperatureSigmas = sigmas;
}

void ForecastIntegrator::setReequilibrationSteps(int steps) {
    require(steps >= 0, "reequilibrationSteps must be >= 0, got " + std::to_string(steps));
    reequilibrationSteps = steps;
}

void ForecastIntegrator::setBondStretch(double factor) {
    require(factor > 1 && std::isfinite(factor), "bondStretch must be > 1, got " + std::to_string(factor));
    bondStretch = factor;
}

void ForecastIntegrator::setThermostatted(int mode) {
    require(mode >= -1 && mode <= 1, "thermostatted must be -1 (detect), 0 or 1, got " + std::to_string(mode));
    thermostatted = mode;
}

void ForecastIntegrator::setAcceptance(const string& rule) {
    require(rule == "tolerance" || rule == "metropolis" || rule == "ghmc",
            "acceptance must be 'tolerance', 'metropolis' or 'ghmc', got '" + rule + "'");
    acceptance = rule;
}

void ForecastIntegrator::setVelocityMemory(double memory) {
    require(memory == -1 || (memory >= 0 && memory <= 1), "velocityMemory must be in [0, 1] (-1: from the friction), got " +
            std::to_string(memory));
    velocityMemory = memory;
}

void ForecastIntegrator::setJump(double ps) {
    require(ps >= 0 && std::isfinite(ps), "jump must be a finite number >= 0 ps (0: a TorchScript forecaster's own spans), got " +
            std::to_string(ps));
    jump = ps;
}

void ForecastIntegrator::setSurrogateStepSize(double ps) {
    require(ps >= 0 && std::isfinite(ps), "surrogateStepSize must be a finite number >= 0 ps (0: the step size), got " +
            std::to_string(ps));
    surrogateStepSize = ps;
}

void ForecastIntegrator::setSurrogatePlatform(const string& name) {
    require(!name.empty(), "surrogatePlatform must name an OpenMM platform");
    surrogatePlatform = name;
}

void ForecastIntegrator::initialize(ContextImpl& contextRef) {
    if (owner != nullptr && &contextRef.getOwner() != owner)
        throw OpenMMException("This Integrator is already bound to a context");
    registerForecastKernels();
    context = &contextRef;
    owner = &contextRef.getOwner();
    kernel = context->getPlatform().createKernel(IntegrateForecastStepKernel::Name(), contextRef);
    kernel.getAs<IntegrateForecastStepKernel>().initialize(contextRef, *this);
}

void ForecastIntegrator::cleanup() {
    kernel = Kernel();
}

vector<string> ForecastIntegrator::getKernelNames() {
    registerForecastKernels();
    return {IntegrateForecastStepKernel::Name(), IntegrateLangevinMiddleStepKernel::Name()};
}

double ForecastIntegrator::computeKineticEnergy() {
    return kernel.getAs<IntegrateForecastStepKernel>().computeKineticEnergy(*context, *this);
}

void ForecastIntegrator::step(int steps) {
    if (context == nullptr)
        throw OpenMMException("This Integrator is not bound to a context!");
    require(steps >= 0, "step() needs steps >= 0, got " + std::to_string(steps));
    kernel.getAs<IntegrateForecastStepKernel>().execute(*context, *this, steps);
}

ForecastStatistics ForecastIntegrator::getStatistics() const {
    if (context == nullptr)
        return ForecastStatistics();
    return kernel.getAs<IntegrateForecastStepKernel>().getStatistics();
}

void ForecastIntegrator::createCheckpoint(std::ostream& stream) const {
    kernel.getAs<IntegrateForecastStepKernel>().createCheckpoint(stream);
}

void ForecastIntegrator::loadCheckpoint(std::istream& stream) {
    kernel.getAs<IntegrateForecastStepKernel>().loadCheckpoint(stream, *this);
}
