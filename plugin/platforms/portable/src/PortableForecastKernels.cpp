#include "PortableForecastKernels.h"
#include "openmm/AndersenThermostat.h"
#include "openmm/CMMotionRemover.h"
#include "openmm/HarmonicBondForce.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/kernels.h"
#include <chrono>
#include <cmath>
#include <iostream>
#include <set>
#include <sstream>

using namespace ForecastPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

namespace {

const double MOLAR_GAS_CONSTANT_KJ = 0.00831446261815324;  // kJ/mol/K (as openmm.unit's, used by the Python driver)
const int CHECKPOINT_VERSION = 1;

/** Adds the wall-clock time of its lifetime to a counter. */
class Timer {
public:
    explicit Timer(double& total) : total(total), start(std::chrono::steady_clock::now()) {}
    ~Timer() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
private:
    double& total;
    std::chrono::steady_clock::time_point start;
};

class PortableForecastKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const override {
        if (name == IntegrateForecastStepKernel::Name())
            return new PortableIntegrateForecastStepKernel(name, platform);
        throw OpenMMException("ForecastIntegrator: no kernel " + name);
    }
};

} // namespace

void ForecastPlugin::registerForecastKernels() {
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (!platform.supportsKernels({IntegrateForecastStepKernel::Name()}))
            platform.registerKernelFactory(IntegrateForecastStepKernel::Name(), new PortableForecastKernelFactory());
    }
}

// ---- construction ----------------------------------------------------------------------------------------------

void PortableIntegrateForecastStepKernel::initialize(ContextImpl& context, const ForecastIntegrator& integrator) {
    this->context = &context;
    const System& system = context.getSystem();
    model.reset(new ForecasterModel(integrator.getForecasterFile()));
    if (model->numAtoms() != system.getNumParticles())
        throw OpenMMException("ForecastIntegrator: forecaster '" + integrator.getForecasterFile() + "' (" + model->architecture +
                              ") was built for " + std::to_string(model->numAtoms()) + " atoms, but the System has " +
                              std::to_string(system.getNumParticles()) + " particles");
    if (model->history != 1)
        throw OpenMMException("ForecastIntegrator: forecaster '" + integrator.getForecasterFile() + "' reads a history of " +
                              std::to_string(model->history) + " states; the plugin supports history 1 only (use the Python "
                              "ForecastAccelerator for such forecasters)");
    int n = system.getNumParticles();
    masses.resize(n);
    for (int i = 0; i < n; i++)
        masses[i] = system.getParticleMass(i);
    dof = 0;
    for (int i = 0; i < n; i++)
        if (masses[i] > 0)
            dof += 3;
    std::set<std::pair<int, int>> pairs;
    for (int i = 0; i < system.getNumConstraints(); i++) {
        int p1, p2;
        double distance;
        system.getConstraintParameters(i, p1, p2, distance);
        if (masses[p1] > 0 || masses[p2] > 0)
            dof--;
        pairs.insert({std::min(p1, p2), std::max(p1, p2)});
    }
    hasConstraints = system.getNumConstraints() > 0;
    removesCom = hasAndersen = false;
    for (int i = 0; i < system.getNumForces(); i++) {
        const Force& force = system.getForce(i);
        if (dynamic_cast<const CMMotionRemover*>(&force) != nullptr)
            removesCom = true;
        if (dynamic_cast<const AndersenThermostat*>(&force) != nullptr)
            hasAndersen = true;
        if (auto bondForce = dynamic_cast<const HarmonicBondForce*>(&force)) {
            for (int b = 0; b < bondForce->getNumBonds(); b++) {
                int p1, p2;
                double length, k;
                bondForce->getBondParameters(b, p1, p2, length, k);
                pairs.insert({std::min(p1, p2), std::max(p1, p2)});
            }
        }
    }
    if (removesCom)
        dof -= 3;
    bonds.assign(pairs.begin(), pairs.end());
    referenceBondLengths.clear();
    readIntegrator(integrator);
    int requestedMax = integrator.getMaxFrames();
    if (requestedMax > model->maxFrames)
        throw OpenMMException("ForecastIntegrator: maxFrames (" + std::to_string(requestedMax) + ") exceeds the forecaster's max_frames (" +
                              std::to_string(model->maxFrames) + ")");
    stats.spanFrames = integrator.getInitialFrames() > 0 ? integrator.getInitialFrames() : maxFrames;
    if (stats.spanFrames > maxFrames)
        throw OpenMMException("ForecastIntegrator: initialFrames (" + std::to_string(stats.spanFrames) + ") exceeds maxFrames (" +
                              std::to_string(maxFrames) + ")");
    langevin = context.getPlatform().createKernel(IntegrateLangevinMiddleStepKernel::Name(), context);
    langevin.getAs<IntegrateLangevinMiddleStepKernel>().initialize(system, inner);
    random.seed(integrator.getRandomNumberSeed() != 0 ? (unsigned long long) integrator.getRandomNumberSeed() : std::random_device()());
}

void PortableIntegrateForecastStepKernel::readIntegrator(const ForecastIntegrator& integrator) {
    stepSize = integrator.getStepSize();
    double ratio = model->stridePs / stepSize;
    int stride = (int) std::lround(ratio);
    if (stride < 1 || std::abs(ratio - stride) > 1e-6 * ratio)
        throw OpenMMException("ForecastIntegrator: the forecaster's stride (" + std::to_string(model->stridePs) +
                              " ps) is not a whole number of steps (" + std::to_string(stepSize) + " ps); use a step size that divides the stride");
    strideSteps = stride;
    segmentSteps = integrator.getSegmentSteps() > 0 ? integrator.getSegmentSteps() : strideSteps;
    maxFrames = integrator.getMaxFrames() > 0 ? integrator.getMaxFrames() : model->maxFrames;
    jumpsPerCycle = integrator.getJumpsPerCycle();
    growAfter = integrator.getGrowAfter();
    metropolis = integrator.getMetropolis();
    adaptSpan = integrator.getAdaptSpan() < 0 ? !metropolis : integrator.getAdaptSpan() != 0;
    tolerance = integrator.getEnergyTolerance();
    driftToleranceKT = integrator.getDriftTolerance();
    temperatureSigmas = integrator.getTemperatureSigmas();
    reequilibrationSteps = integrator.getReequilibrationSteps();
    bondStretch = integrator.getBondStretch();
    temperature = integrator.getTemperature();
    kT = MOLAR_GAS_CONSTANT_KJ * temperature;
    friction = integrator.getFriction();
    thermostatFriction = integrator.getThermostatJumps() ? friction : 0.0;
    thermostatted = integrator.getThermostatted() < 0 ? (hasAndersen || friction > 0) : integrator.getThermostatted() != 0;
    constraintTolerance = integrator.getConstraintTolerance();
    groups = integrator.getIntegrationForceGroups();
    int n = masses.size();
    halfKick.assign(n, 0.0);
    thermalSpeed.assign(n, 0.0);
    for (int i = 0; i < n; i++) {
        double inverseMass = masses[i] > 0 ? 1.0 / masses[i] : 0.0;
        halfKick[i] = 0.5 * stepSize * inverseMass;       // ps/amu: dt/2 F/m in nm/ps
        thermalSpeed[i] = std::sqrt(kT * inverseMass);   // sqrt(kT/m) in nm/ps
    }
    inner.setTemperature(temperature);
    inner.setFriction(friction);
    inner.setStepSize(stepSize);
    inner.setConstraintTolerance(constraintTolerance);
    inner.setIntegrationForceGroups(groups);
    inner.setRandomNumberSeed(integrator.getRandomNumberSeed());
}

double PortableIntegrateForecastStepKernel::computeKineticEnergy(ContextImpl& context, const ForecastIntegrator& integrator) {
    return langevin.getAs<IntegrateLangevinMiddleStepKernel>().computeKineticEnergy(context, inner);
}

// ---- the cycle (accelerator.py's module docstring) --------------------------------------------------------------

void PortableIntegrateForecastStepKernel::execute(ContextImpl& context, const ForecastIntegrator& integrator, int steps) {
    readIntegrator(integrator);
    long long endStep = context.getStepCount() + steps;
    {
        Timer timer(stats.wallSeconds["transfer"]);
        capture();
    }
    if (referenceBondLengths.empty()) {
        for (const auto& bond : bonds)
            referenceBondLengths.push_back((current.positions[bond.first] - current.positions[bond.second]).dot(
                current.positions[bond.first] - current.positions[bond.second]));
        for (double& length : referenceBondLengths)
            length = std::sqrt(length);
    }
    while (context.getStepCount() < endStep)
        cycle(endStep);
}

void PortableIntegrateForecastStepKernel::cycle(long long endStep) {
    long long remaining = endStep - context->getStepCount();
    if (maintain(remaining))
        return;
    integrate((int) std::min<long long>(segmentSteps, remaining));
    for (int j = 0; j < jumpsPerCycle; j++) {
        int nFrames = (int) std::min<long long>(stats.spanFrames, (endStep - context->getStepCount()) / strideSteps);
        if (nFrames == 0)
            return;
        bool accepted = jump(nFrames);
        // Metropolis: the schedule must not depend on outcomes; tolerance: go on after an acceptance unless
        // maintenance is due.
        if (!metropolis && !(accepted && !reequilibrationDue()))
            return;
    }
}

bool PortableIntegrateForecastStepKernel::jump(int nFrames) {
    stats.jumpsAttempted++;
    stats.attemptedByFrames[nFrames]++;
    Snapshot before = current;
    int n = masses.size();
    vector<double> x(3 * n), v(3 * n), newX, newV;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            x[3 * i + k] = before.positions[i][k];
            v[3 * i + k] = before.velocities[i][k];
        }
    string reason;
    try {
        Timer timer(stats.wallSeconds["forecast"]);
        model->forecast(x, v, nFrames, newX, newV);
    }
    catch (const std::exception& error) {
        reason = "forecaster";
    }
    if (reason.empty()) {
        Timer timer(stats.wallSeconds["guard"]);
        reason = sanity(newX, newV, nFrames);
    }
    double dh = NAN;
    Snapshot after;
    if (reason.empty()) {
        try {
            Timer timer(stats.wallSeconds["guard"]);
            size_t last = (size_t) (nFrames - 1) * 3 * n;
            vector<Vec3> positions(n), velocities(n);
            for (int i = 0; i < n; i++) {
                positions[i] = Vec3(newX[last + 3 * i], newX[last + 3 * i + 1], newX[last + 3 * i + 2]);
                velocities[i] = Vec3(newV[last + 3 * i], newV[last + 3 * i + 1], newV[last + 3 * i + 2]);
            }
            context->setPositions(positions);
            if (hasConstraints)
                context->applyConstraints(constraintTolerance);
            advanceClock(before, nFrames);
            after = setVelocities(velocities, nullptr);
            dh = after.hamiltonian - before.hamiltonian;
            if (!std::isfinite(dh))
                reason = "energy";
            else if (metropolis) {
                double uniform = std::uniform_real_distribution<double>(0.0, 1.0)(random);
                reason = uniform < std::exp(std::min(0.0, -dh / kT)) ? "" : "metropolis";
            }
            else
                reason = std::abs(dh) <= tolerance * kT ? "" : "energy";
        }
        catch (const OpenMMException& error) {  // e.g. constraints that cannot be satisfied: the forecast is refused
            reason = "nonfinite";
            dh = NAN;
        }
        stats.recordDh(dh);
    }
    if (!reason.empty()) {
        reject(before, reason, nFrames);
        return false;
    }
    current = after;
    stats.driftKJ += dh;
    stats.jumpsAccepted++;
    stats.acceptedByFrames[nFrames]++;
    double spanPs = nFrames * strideSteps * stepSize;
    stats.jumpedPs += spanPs;
    if (adaptSpan && nFrames == stats.spanFrames) {
        if (++stats.acceptedInRow >= growAfter) {
            stats.spanFrames = std::min(maxFrames, 2 * stats.spanFrames);
            stats.acceptedInRow = 0;
        }
    }
    thermalise(spanPs);
    return true;
}

string PortableIntegrateForecastStepKernel::sanity(const vector<double>& x, const vector<double>& v, int nFrames) const {
    for (size_t i = 0; i < x.size(); i++)
        if (!std::isfinite(x[i]) || !std::isfinite(v[i]))
            return "nonfinite";
    int n = masses.size();
    for (int f = 0; f < nFrames; f++) {
        const double* frame = &x[(size_t) f * 3 * n];
        for (size_t b = 0; b < bonds.size(); b++) {
            const double* p = frame + 3 * bonds[b].first;
            const double* q = frame + 3 * bonds[b].second;
            double ratio = std::sqrt((p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1]) + (p[2] - q[2]) * (p[2] - q[2])) /
                           referenceBondLengths[b];
            if (ratio > bondStretch || ratio < 1.0 / bondStretch)
                return "bond";
        }
    }
    return "";
}

void PortableIntegrateForecastStepKernel::reject(const Snapshot& before, const string& reason, int nFrames) {
    stats.rejections[reason]++;
    {
        Timer timer(stats.wallSeconds["transfer"]);
        restore(before);
    }
    if (adaptSpan) {
        stats.spanFrames = std::max(1, stats.spanFrames / 2);
        stats.acceptedInRow = 0;
    }
    if (!metropolis) {
        integrate(nFrames * strideSteps);
        return;
    }
    {
        Timer timer(stats.wallSeconds["transfer"]);
        advanceClock(before, nFrames);
        vector<Vec3> reversed(before.velocities.size());
        for (size_t i = 0; i < reversed.size(); i++)
            reversed[i] = -before.velocities[i];
        current = setVelocities(reversed, &before);
    }
    double spanPs = nFrames * strideSteps * stepSize;
    thermalise(spanPs);
    stats.keptPs += spanPs;
}

void PortableIntegrateForecastStepKernel::thermalise(double spanPs) {
    if (thermostatFriction == 0.0)
        return;
    Timer timer(stats.wallSeconds["transfer"]);
    double decay = std::exp(-thermostatFriction * spanPs);
    double noise = std::sqrt(1.0 - decay * decay);
    std::normal_distribution<double> gaussian(0.0, 1.0);
    vector<Vec3> velocities = current.velocities;
    for (size_t i = 0; i < velocities.size(); i++)
        for (int k = 0; k < 3; k++)
            velocities[i][k] = decay * velocities[i][k] + noise * thermalSpeed[i] * gaussian(random);
    if (removesCom) {
        Vec3 momentum;
        double totalMass = 0;
        for (size_t i = 0; i < velocities.size(); i++) {
            momentum += velocities[i] * masses[i];
            totalMass += masses[i];
        }
        for (auto& velocity : velocities)
            velocity -= momentum / totalMass;
    }
    Snapshot same = current;
    current = setVelocities(velocities, &same);
}

// ---- state transfer ----------------------------------------------------------------------------------------------

double PortableIntegrateForecastStepKernel::kineticEnergy(const vector<Vec3>& velocities) const {
    double sum = 0;
    for (size_t i = 0; i < velocities.size(); i++)
        sum += masses[i] * velocities[i].dot(velocities[i]);
    return 0.5 * sum;
}

void PortableIntegrateForecastStepKernel::integrate(int steps) {
    if (steps <= 0)
        return;
    {
        Timer timer(stats.wallSeconds["integration"]);
        IntegrateLangevinMiddleStepKernel& step = langevin.getAs<IntegrateLangevinMiddleStepKernel>();
        for (int i = 0; i < steps; i++) {  // as LangevinMiddleIntegrator::step
            context->updateContextState();
            context->calcForcesAndEnergy(true, false, groups);
            step.execute(*context, inner);
        }
    }
    stats.integratedPs += steps * stepSize;
    Timer timer(stats.wallSeconds["transfer"]);
    capture();
}

void PortableIntegrateForecastStepKernel::capture() {
    Snapshot snapshot;
    {
        Timer timer(stats.wallSeconds["energy"]);
        snapshot.potential = context->calcForcesAndEnergy(true, true, groups);
    }
    context->getForces(snapshot.forces);
    context->getPositions(snapshot.positions);
    context->getVelocities(snapshot.contextVelocities);
    snapshot.time = context->getTime();
    snapshot.stepCount = context->getStepCount();
    int n = masses.size();
    snapshot.velocities.resize(n);
    for (int i = 0; i < n; i++)  // synchronous velocities: half a kick ahead of the Context's (leapfrog)
        snapshot.velocities[i] = snapshot.contextVelocities[i] + snapshot.forces[i] * halfKick[i];
    if (hasConstraints) {
        context->setVelocities(snapshot.velocities);
        context->applyVelocityConstraints(constraintTolerance);
        context->getVelocities(snapshot.velocities);
        context->setVelocities(snapshot.contextVelocities);
    }
    snapshot.hamiltonian = snapshot.potential + kineticEnergy(snapshot.velocities);
    current = std::move(snapshot);
}

PortableIntegrateForecastStepKernel::Snapshot PortableIntegrateForecastStepKernel::setVelocities(const vector<Vec3>& velocities,
                                                                                                  const Snapshot* samePositionsAs) {
    Snapshot snapshot;
    context->setVelocities(velocities);
    if (hasConstraints)
        context->applyVelocityConstraints(constraintTolerance);
    if (samePositionsAs == nullptr) {
        Timer timer(stats.wallSeconds["energy"]);
        snapshot.potential = context->calcForcesAndEnergy(true, true, groups);
        context->getForces(snapshot.forces);
    }
    else {
        snapshot.potential = samePositionsAs->potential;
        snapshot.forces = samePositionsAs->forces;
    }
    context->getPositions(snapshot.positions);
    context->getVelocities(snapshot.velocities);
    int n = masses.size();
    snapshot.contextVelocities.resize(n);
    for (int i = 0; i < n; i++)
        snapshot.contextVelocities[i] = snapshot.velocities[i] - snapshot.forces[i] * halfKick[i];
    context->setVelocities(snapshot.contextVelocities);
    if (hasConstraints) {
        context->applyVelocityConstraints(constraintTolerance);
        context->getVelocities(snapshot.contextVelocities);
    }
    snapshot.time = context->getTime();
    snapshot.stepCount = context->getStepCount();
    snapshot.hamiltonian = snapshot.potential + kineticEnergy(snapshot.velocities);
    return snapshot;
}

void PortableIntegrateForecastStepKernel::restore(const Snapshot& snapshot) {
    context->setPositions(snapshot.positions);
    context->setVelocities(snapshot.contextVelocities);
    context->setTime(snapshot.time);
    context->setStepCount(snapshot.stepCount);
    current = snapshot;
}

void PortableIntegrateForecastStepKernel::advanceClock(const Snapshot& before, int nFrames) {
    long long spanSteps = (long long) nFrames * strideSteps;
    context->setTime(before.time + spanSteps * stepSize);
    context->setStepCount(before.stepCount + spanSteps);
}

// ---- maintenance (tolerance mode) ---------------------------------------------------------------------------------

bool PortableIntegrateForecastStepKernel::reequilibrationDue() const {
    if (metropolis || reequilibrationSteps == 0)
        return false;
    if (driftExceeded())
        return true;
    if (temperatureSigmas <= 0 || dof <= 0 || !thermostatted)
        return false;  // without a thermostat neither is T canonical nor can integration bring it back
    // Wilson-Hilferty: dof * T / T0 is chi-squared; the cube root of T / T0 is nearly normal (guards.py).
    double kinetic = 2.0 * kineticEnergy(current.velocities) / (dof * MOLAR_GAS_CONSTANT_KJ);
    double c = 2.0 / (9.0 * dof);
    double score = (std::cbrt(kinetic / temperature) - (1.0 - c)) / std::sqrt(c);
    return std::abs(score) > temperatureSigmas;
}

bool PortableIntegrateForecastStepKernel::maintain(long long remaining) {
    if (!reequilibrationDue())
        return false;
    if (!thermostatted && driftExceeded()) {
        if (!stats.jumpsSwitchedOff) {
            stats.jumpsSwitchedOff = true;
            std::cerr << "ForecastIntegrator: the jumps changed the total energy by " << stats.driftKJ << " kJ/mol (more than "
                      << driftToleranceKT << " kT) and the integrator has no friction to remove it: continuing as plain MD" << std::endl;
        }
        integrate((int) remaining);
        return true;
    }
    integrate((int) std::min<long long>(reequilibrationSteps, remaining));
    stats.reequilibrations++;
    if (thermostatted)
        stats.driftKJ = 0.0;
    return true;
}

// ---- checkpoints ----------------------------------------------------------------------------------------------------

void PortableIntegrateForecastStepKernel::createCheckpoint(std::ostream& stream) const {
    std::ostringstream out;
    out.precision(17);
    out << "forecast-integrator " << CHECKPOINT_VERSION << " " << model->fingerprint << "\n";
    stats.write(out);
    out << referenceBondLengths.size();
    for (double length : referenceBondLengths)
        out << " " << length;
    out << "\n" << random << "\n";
    string text = out.str();
    long long size = text.size();
    stream.write((const char*) &size, sizeof(size));
    stream.write(text.data(), size);
}

void PortableIntegrateForecastStepKernel::loadCheckpoint(std::istream& stream) {
    long long size = 0;
    stream.read((char*) &size, sizeof(size));
    if (!stream || size <= 0 || size > (1LL << 32))
        throw OpenMMException("ForecastIntegrator: the checkpoint holds no ForecastIntegrator state");
    string text(size, '\0');
    stream.read(&text[0], size);
    std::istringstream in(text);
    string tag;
    int version = 0;
    unsigned long long fingerprint = 0;
    in >> tag >> version >> fingerprint;
    if (tag != "forecast-integrator" || version != CHECKPOINT_VERSION)
        throw OpenMMException("ForecastIntegrator: the checkpoint holds no ForecastIntegrator state of version " + std::to_string(CHECKPOINT_VERSION));
    if (fingerprint != model->fingerprint)
        throw OpenMMException("ForecastIntegrator: the checkpoint was written with another forecaster than '" + model->architecture + "'");
    ForecastStatistics loaded;
    loaded.read(in);
    size_t nBonds = 0;
    in >> nBonds;
    vector<double> lengths(nBonds);
    for (double& length : lengths)
        in >> length;
    std::mt19937_64 loadedRandom;
    in >> loadedRandom;
    if (!in || (nBonds != 0 && nBonds != bonds.size()))
        throw OpenMMException("ForecastIntegrator: the checkpoint's ForecastIntegrator state is corrupt");
    stats = loaded;
    referenceBondLengths = lengths;
    random = loadedRandom;
}
