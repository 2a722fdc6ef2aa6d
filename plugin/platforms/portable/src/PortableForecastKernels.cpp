#include "PortableForecastKernels.h"
#include "internal/ForecasterModel.h"
#include "internal/SurrogateProposal.h"
#include "openmm/AndersenThermostat.h"
#include "openmm/CMMotionRemover.h"
#include "openmm/HarmonicBondForce.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/kernels.h"
#include <chrono>
#include <climits>
#include <typeinfo>
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
const int CHECKPOINT_VERSION = 2;

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

void PortableIntegrateForecastStepKernel::refuseUnsupported(const System& system) const {
    // As the Python driver's _check_supported_system: a forecast carries no box, and predicts atoms only.
    for (int i = 0; i < system.getNumForces(); i++) {
        string type = typeid(system.getForce(i)).name();
        if (type.find("Barostat") != string::npos)
            throw OpenMMException("ForecastIntegrator: the System has a barostat (force " + std::to_string(i) + ", " + system.getForce(i).getName() +
                                  "): constant-pressure simulations are not supported (a jump carries no box, so volume moves and "
                                  "jumps would not mix correctly); equilibrate the density with plain MD, then jump at constant volume");
        if (type.find("DrudeForce") != string::npos)
            throw OpenMMException("ForecastIntegrator: the System has Drude particles (DrudeForce): polarisable systems are not supported");
    }
    int virtualSites = 0, first = -1;
    for (int i = 0; i < system.getNumParticles(); i++)
        if (system.isVirtualSite(i)) {
            virtualSites++;
            if (first < 0)
                first = i;
        }
    if (virtualSites > 0)
        throw OpenMMException("ForecastIntegrator: the System has " + std::to_string(virtualSites) + " virtual sites (first: particle " +
                              std::to_string(first) + "): not supported (a proposal moves atoms only); use a water model without "
                              "them (TIP3P) or an implicit solvent");
}

void PortableIntegrateForecastStepKernel::initialize(ContextImpl& context, const ForecastIntegrator& integrator) {
    this->context = &context;
    const System& system = context.getSystem();
    refuseUnsupported(system);
    const string& file = integrator.getForecasterFile();
    if (file.size() > 4 && file.compare(file.size() - 4, 4, ".xml") == 0) {
        if (!(integrator.getJump() > 0))
            throw OpenMMException("ForecastIntegrator: the surrogate System '" + file + "' needs a jump length > 0 ps (setJump)");
        double dt = integrator.getSurrogateStepSize() > 0 ? integrator.getSurrogateStepSize() : integrator.getStepSize();
        proposal.reset(new SurrogateProposal(file, system, integrator.getJump(), dt, integrator.getSurrogatePlatform(),
                                             integrator.getConstraintTolerance()));
    }
    else {
        if (integrator.getJump() != 0)
            throw OpenMMException("ForecastIntegrator: jump is the length of a surrogate System's jump; a TorchScript forecaster's "
                                  "jumps are whole strides (set maxFrames instead)");
        proposal.reset(new ForecasterModel(file));
    }
    if (proposal->numAtoms() != system.getNumParticles())
        throw OpenMMException("ForecastIntegrator: " + proposal->description + " was built for " + std::to_string(proposal->numAtoms()) +
                              " atoms, but the System has " + std::to_string(system.getNumParticles()) + " particles");
    if (proposal->history != 1)
        throw OpenMMException("ForecastIntegrator: " + proposal->description + " reads a history of " + std::to_string(proposal->history) +
                              " states; the plugin supports history 1 only (use the Python ForecastAccelerator for such forecasters)");
    acceptance = integrator.getAcceptance();
    exact = integrator.isExactRule();
    ghmc = acceptance == "ghmc";
    if (exact && !proposal->structurePreserving) {
        string what = "the '" + acceptance + "' rule is exact only with a volume-preserving, time-reversible proposal (a surrogate System, "
                      "the symplectic architecture); " + proposal->description + " is not certified so, and with it the test certifies "
                      "nothing: the shipped network 'accepted' 80-88 % of its jumps while the molecule cooled to 46-130 K";
        if (!integrator.getAllowInexactMetropolis())
            throw OpenMMException("ForecastIntegrator: " + what + ". Use acceptance 'tolerance', or setAllowInexactMetropolis(true) "
                                  "(Python: allow_inexact_metropolis=True) to run it anyway");
        std::cerr << "ForecastIntegrator WARNING: " << what << "; running it because allowInexactMetropolis is set: check the temperature"
                  << std::endl;
    }
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
    perAtomStepSize = perAtomKT = -1;  // the masses are new: halfKick and thermalSpeed too
    readIntegrator(integrator);
    int requestedMax = integrator.getMaxFrames();
    if (requestedMax > proposal->maxFrames)
        throw OpenMMException("ForecastIntegrator: maxFrames (" + std::to_string(requestedMax) + ") exceeds the proposal's max_frames (" +
                              std::to_string(proposal->maxFrames) + ")");
    stats.spanFrames = integrator.getInitialFrames() > 0 ? integrator.getInitialFrames() : maxFrames;
    if (stats.spanFrames > maxFrames)
        throw OpenMMException("ForecastIntegrator: initialFrames (" + std::to_string(stats.spanFrames) + ") exceeds maxFrames (" +
                              std::to_string(maxFrames) + ")");
    langevin = context.getPlatform().createKernel(IntegrateLangevinMiddleStepKernel::Name(), context);
    langevin.getAs<IntegrateLangevinMiddleStepKernel>().initialize(system, inner);
    random.seed((unsigned long long) (unsigned) integrator.getRandomNumberSeed());
    stats.randomStream = random.describe();
}

void PortableIntegrateForecastStepKernel::readIntegrator(const ForecastIntegrator& integrator) {
    if (integrator.getAcceptance() != acceptance)
        throw OpenMMException("ForecastIntegrator: the acceptance rule cannot change once the Context exists ('" + acceptance + "' to '" +
                              integrator.getAcceptance() + "'): create a new Context");
    if (integrator.getJump() != 0 && integrator.getJump() != proposal->stridePs)
        throw OpenMMException("ForecastIntegrator: the jump cannot change once the Context exists: create a new Context");
    stepSize = integrator.getStepSize();
    double ratio = proposal->stridePs / stepSize;
    int stride = (int) std::lround(ratio);
    if (stride < 1 || std::abs(ratio - stride) > 1e-6 * ratio)
        throw OpenMMException("ForecastIntegrator: the jump's stride (" + std::to_string(proposal->stridePs) +
                              " ps) is not a whole number of steps (" + std::to_string(stepSize) + " ps); use a step size that divides it");
    strideSteps = stride;
    segmentSteps = ghmc ? 0 : integrator.getSegmentSteps() > 0 ? integrator.getSegmentSteps() : strideSteps;
    maxFrames = integrator.getMaxFrames() > 0 ? integrator.getMaxFrames() : proposal->maxFrames;
    jumpsPerCycle = integrator.getJumpsPerCycle();
    growAfter = integrator.getGrowAfter();
    adaptSpan = integrator.getAdaptSpan() < 0 ? !exact : integrator.getAdaptSpan() != 0;
    tolerance = integrator.getEnergyTolerance();
    driftToleranceKT = integrator.getDriftTolerance();
    temperatureSigmas = integrator.getTemperatureSigmas();
    reequilibrationSteps = integrator.getReequilibrationSteps();
    bondStretch = integrator.getBondStretch();
    velocityMemory = integrator.getVelocityMemory();
    temperature = integrator.getTemperature();
    kT = MOLAR_GAS_CONSTANT_KJ * temperature;
    friction = integrator.getFriction();
    thermostatFriction = integrator.getThermostatJumps() ? friction : 0.0;
    thermostatted = integrator.getThermostatted() < 0 ? (hasAndersen || friction > 0) : integrator.getThermostatted() != 0;
    constraintTolerance = integrator.getConstraintTolerance();
    groups = integrator.getIntegrationForceGroups();
    if (stepSize != perAtomStepSize || kT != perAtomKT) {  // read at every step() call: recomputed on a change only
        int n = masses.size();
        halfKick.assign(n, 0.0);
        thermalSpeed.assign(n, 0.0);
        for (int i = 0; i < n; i++) {
            double inverseMass = masses[i] > 0 ? 1.0 / masses[i] : 0.0;
            halfKick[i] = 0.5 * stepSize * inverseMass;       // ps/amu: dt/2 F/m in nm/ps
            thermalSpeed[i] = std::sqrt(kT * inverseMass);   // sqrt(kT/m) in nm/ps
        }
        perAtomStepSize = stepSize;
        perAtomKT = kT;
    }
    inner.setTemperature(temperature);
    inner.setFriction(friction);
    inner.setStepSize(stepSize);
    inner.setConstraintTolerance(constraintTolerance);
    inner.setIntegrationForceGroups(groups);
    inner.setRandomNumberSeed(integrator.getRandomNumberSeed());
}

double PortableIntegrateForecastStepKernel::computeKineticEnergy(ContextImpl& context, const ForecastIntegrator& integrator) {
    if (ghmc) {  // the Context holds synchronous velocities
        vector<Vec3> velocities;
        context.getVelocities(velocities);
        return kineticEnergy(velocities);
    }
    return langevin.getAs<IntegrateLangevinMiddleStepKernel>().computeKineticEnergy(context, inner);
}

// ---- the schedule (accelerator.py's and cycles.py's docstrings) ----------------------------------------------------

void PortableIntegrateForecastStepKernel::execute(ContextImpl& context, const ForecastIntegrator& integrator, int steps) {
    readIntegrator(integrator);
    long long endStep = context.getStepCount() + steps;
    if (!holdsLeft()) {  // a new Context state (first call, or changed from outside): a new cycle from it
        integrateUntil = -1;
        pendingFrames = jumpsLeft = 0;
        stale = true;
    }
    if (stale) {
        Timer timer(stats.wallSeconds["transfer"]);
        capture();
    }
    if (referenceBondLengths.empty()) {
        for (const auto& bond : bonds) {
            Vec3 d = current.positions[bond.first] - current.positions[bond.second];
            referenceBondLengths.push_back(std::sqrt(d.dot(d)));
        }
    }
    while (true) {
        long long now = context.getStepCount();
        if (integrateUntil > now) {
            if (now >= endStep)
                break;
            integrate((int) (std::min(integrateUntil, endStep) - now));
            continue;
        }
        if (stale) {
            Timer timer(stats.wallSeconds["transfer"]);
            capture();
        }
        if (pendingFrames > 0) {
            long long due = current.stepCount + (long long) pendingFrames * strideSteps;
            if (due > endStep) {  // hold: the state before the jump, the clock at the end of the call
                advanceClock(current, endStep - current.stepCount);
                break;
            }
            int nFrames = pendingFrames;
            pendingFrames = 0;
            bool accepted = jump(nFrames);
            jumpsLeft--;
            // exact rules: the schedule must not depend on outcomes; tolerance: go on after an acceptance unless
            // maintenance is due.
            if (!exact && !(accepted && !reequilibrationDue()))
                jumpsLeft = 0;
            continue;
        }
        if (now >= endStep)
            break;
        if (jumpsLeft > 0) {
            pendingFrames = stats.spanFrames;
            continue;
        }
        if (maintain())
            continue;
        integrateUntil = now + segmentSteps;
        jumpsLeft = jumpsPerCycle;
    }
    stats.pendingPs = pendingFrames > 0 ? (double) (context.getStepCount() - current.stepCount) * stepSize : 0.0;
    Timer timer(stats.wallSeconds["transfer"]);
    remember(left);
}

void PortableIntegrateForecastStepKernel::remember(Left& state) const {
    context->getPositions(state.positions);
    context->getVelocities(state.velocities);
    context->getPeriodicBoxVectors(state.box[0], state.box[1], state.box[2]);
    state.parameters = context->getParameters();
    state.stepCount = context->getStepCount();
    state.time = context->getTime();
}

bool PortableIntegrateForecastStepKernel::holdsLeft() const {
    if (left.stepCount < 0 || context->getStepCount() != left.stepCount || context->getTime() != left.time)
        return false;
    remember(now);
    for (int k = 0; k < 3; k++)
        if (now.box[k] != left.box[k])
            return false;
    return now.positions == left.positions && now.velocities == left.velocities && now.parameters == left.parameters;
}

bool PortableIntegrateForecastStepKernel::jump(int nFrames) {
    double spanPs = (double) ((long long) nFrames * strideSteps) * stepSize;
    advanceClock(current, 0);  // the clock back from where it was held to the jump's start
    if (ghmc)
        thermalise(spanPs);  // the whole refresh before the jump (cycles.py: thermostat_before = 1)
    stats.jumpsAttempted++;
    stats.attemptedByFrames[nFrames]++;
    Snapshot before = current;
    int n = masses.size();
    vector<double>& x = proposalX;
    vector<double>& v = proposalV;
    vector<double>& newX = forecastX;
    vector<double>& newV = forecastV;
    x.resize(3 * n);
    v.resize(3 * n);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            x[3 * i + k] = before.positions[i][k];
            v[3 * i + k] = before.velocities[i][k];
        }
    string reason;
    double stepSeconds = proposal->stepSeconds;
    try {
        Timer timer(stats.wallSeconds["forecast"]);
        proposal->forecast(x, v, nFrames, newX, newV);
    }
    catch (const std::exception& error) {
        reason = "forecaster";
    }
    stats.wallSeconds["proposal_steps"] += proposal->stepSeconds - stepSeconds;
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
            vector<Vec3>& positions = candidatePositions;
            vector<Vec3>& velocities = candidateVelocities;
            positions.resize(n);
            velocities.resize(n);
            for (int i = 0; i < n; i++) {
                positions[i] = Vec3(newX[last + 3 * i], newX[last + 3 * i + 1], newX[last + 3 * i + 2]);
                velocities[i] = Vec3(newV[last + 3 * i], newV[last + 3 * i + 1], newV[last + 3 * i + 2]);
            }
            context->setPositions(positions);
            if (hasConstraints)
                context->applyConstraints(constraintTolerance);
            advanceClock(before, (long long) nFrames * strideSteps);
            after = setVelocities(velocities, nullptr);
            dh = after.hamiltonian - before.hamiltonian;
            if (!std::isfinite(dh))
                reason = "energy";
            else if (exact) {
                double uniform = random.uniform();
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
    current = std::move(after);
    stats.driftKJ += dh;
    stats.jumpsAccepted++;
    stats.acceptedByFrames[nFrames]++;
    stats.jumpedPs += spanPs;
    if (adaptSpan && nFrames == stats.spanFrames) {
        if (++stats.acceptedInRow >= growAfter) {
            stats.spanFrames = std::min(maxFrames, 2 * stats.spanFrames);
            stats.acceptedInRow = 0;
        }
    }
    thermalise(ghmc ? 0.0 : spanPs);
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
    long long spanSteps = (long long) nFrames * strideSteps;
    if (!exact) {  // tolerance: the span is integrated
        integrateUntil = before.stepCount + spanSteps;
        return;
    }
    {  // exact rules: the configuration is kept for the span with reversed velocities
        Timer timer(stats.wallSeconds["transfer"]);
        advanceClock(before, spanSteps);
        vector<Vec3> reversed(before.velocities.size());
        for (size_t i = 0; i < reversed.size(); i++)
            reversed[i] = -before.velocities[i];
        current = setVelocities(reversed, &before);
    }
    double spanPs = (double) spanSteps * stepSize;
    thermalise(ghmc ? 0.0 : spanPs);
    stats.keptPs += spanPs;
}

double PortableIntegrateForecastStepKernel::velocityDecay(double spanPs) const {
    if (ghmc) {  // cycles.py GHMCCycle.velocity_decay
        if (velocityMemory >= 0)
            return velocityMemory;
        return thermostatFriction > 0 ? std::exp(-thermostatFriction * spanPs) : 0.0;
    }
    return std::exp(-thermostatFriction * spanPs);
}

void PortableIntegrateForecastStepKernel::thermalise(double spanPs) {
    if (spanPs == 0.0)
        return;
    double decay = velocityDecay(spanPs);
    if (decay == 1.0)
        return;
    Timer timer(stats.wallSeconds["transfer"]);
    double noise = std::sqrt(1.0 - decay * decay);
    vector<Vec3> velocities = current.velocities;
    for (size_t i = 0; i < velocities.size(); i++)
        for (int k = 0; k < 3; k++)
            velocities[i][k] = decay * velocities[i][k] + noise * thermalSpeed[i] * random.normal();
    if (removesCom) {  // systems.without_com_velocity
        Vec3 momentum;
        double totalMass = 0;
        for (size_t i = 0; i < velocities.size(); i++) {
            momentum += velocities[i] * masses[i];
            totalMass += masses[i];
        }
        for (auto& velocity : velocities)
            velocity -= momentum / totalMass;
    }
    current = setVelocities(velocities, &current);  // reads current's energy and forces before it is replaced
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
    Timer timer(stats.wallSeconds["integration"]);
    IntegrateLangevinMiddleStepKernel& step = langevin.getAs<IntegrateLangevinMiddleStepKernel>();
    for (int i = 0; i < steps; i++) {  // as LangevinMiddleIntegrator::step
        context->updateContextState();
        context->calcForcesAndEnergy(true, false, groups);
        step.execute(*context, inner);
    }
    stats.integratedPs += steps * stepSize;
    stale = true;
}

void PortableIntegrateForecastStepKernel::capture() {
    Snapshot snapshot;
    {
        Timer timer(stats.wallSeconds["energy"]);
        snapshot.potential = context->calcForcesAndEnergy(!ghmc, true, groups);  // ghmc: the energy only
    }
    context->getPositions(snapshot.positions);
    context->getVelocities(snapshot.contextVelocities);
    snapshot.time = context->getTime();
    snapshot.stepCount = context->getStepCount();
    if (ghmc)  // the Context holds synchronous velocities
        snapshot.velocities = snapshot.contextVelocities;
    else {
        context->getForces(snapshot.forces);
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
    }
    snapshot.hamiltonian = snapshot.potential + kineticEnergy(snapshot.velocities);
    current = std::move(snapshot);
    stale = false;
}

PortableIntegrateForecastStepKernel::Snapshot PortableIntegrateForecastStepKernel::setVelocities(const vector<Vec3>& velocities,
                                                                                                  const Snapshot* samePositionsAs) {
    Snapshot snapshot;
    context->setVelocities(velocities);
    if (hasConstraints)
        context->applyVelocityConstraints(constraintTolerance);
    if (samePositionsAs == nullptr) {
        Timer timer(stats.wallSeconds["energy"]);
        snapshot.potential = context->calcForcesAndEnergy(!ghmc, true, groups);
        if (!ghmc)
            context->getForces(snapshot.forces);
    }
    else {
        snapshot.potential = samePositionsAs->potential;
        snapshot.forces = samePositionsAs->forces;
    }
    context->getPositions(snapshot.positions);
    context->getVelocities(snapshot.velocities);
    if (ghmc)
        snapshot.contextVelocities = snapshot.velocities;
    else {
        int n = masses.size();
        snapshot.contextVelocities.resize(n);
        for (int i = 0; i < n; i++)
            snapshot.contextVelocities[i] = snapshot.velocities[i] - snapshot.forces[i] * halfKick[i];
        context->setVelocities(snapshot.contextVelocities);
        if (hasConstraints) {
            context->applyVelocityConstraints(constraintTolerance);
            context->getVelocities(snapshot.contextVelocities);
        }
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

void PortableIntegrateForecastStepKernel::advanceClock(const Snapshot& before, long long spanSteps) {
    context->setTime(before.time + spanSteps * stepSize);
    context->setStepCount(before.stepCount + spanSteps);
}

// ---- maintenance (tolerance mode) ---------------------------------------------------------------------------------

bool PortableIntegrateForecastStepKernel::reequilibrationDue() const {
    if (exact || reequilibrationSteps == 0)
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

bool PortableIntegrateForecastStepKernel::maintain() {
    if (!reequilibrationDue())
        return false;
    long long now = context->getStepCount();
    if (!thermostatted && driftExceeded()) {
        if (!stats.jumpsSwitchedOff) {
            stats.jumpsSwitchedOff = true;
            std::cerr << "ForecastIntegrator: the jumps changed the total energy by " << stats.driftKJ << " kJ/mol (more than "
                      << driftToleranceKT << " kT) and the integrator has no friction to remove it: continuing as plain MD" << std::endl;
        }
        integrateUntil = LLONG_MAX;  // for good
        return true;
    }
    integrateUntil = now + reequilibrationSteps;
    stats.reequilibrations++;
    if (thermostatted)
        stats.driftKJ = 0.0;
    return true;
}

// ---- checkpoints ----------------------------------------------------------------------------------------------------

namespace {

void writeVectors(std::ostream& out, const vector<Vec3>& values) {
    out << values.size();
    for (const Vec3& value : values)
        out << " " << value[0] << " " << value[1] << " " << value[2];
    out << "\n";
}

void readVectors(std::istream& in, vector<Vec3>& values) {
    size_t n = 0;
    in >> n;
    if (!in || n > (1u << 28))
        throw OpenMMException("ForecastIntegrator: the checkpoint's ForecastIntegrator state is corrupt");
    values.resize(n);
    for (Vec3& value : values) {
        string a, b, c;
        in >> a >> b >> c;
        value = Vec3(std::strtod(a.c_str(), nullptr), std::strtod(b.c_str(), nullptr), std::strtod(c.c_str(), nullptr));
    }
}

double readDouble(std::istream& in) {
    string text;
    in >> text;
    return std::strtod(text.c_str(), nullptr);  // hexfloat: exact
}

} // namespace

void PortableIntegrateForecastStepKernel::createCheckpoint(std::ostream& stream) const {
    std::ostringstream out;
    out.precision(17);
    stats.write(out);  // decimal, 17 digits (read back with >>)
    out << std::hexfloat;  // the rest exact, read back with strtod
    out << acceptance << " " << temperature << " " << friction << " " << stepSize << "\n";
    out << referenceBondLengths.size();
    for (double length : referenceBondLengths)
        out << " " << length;
    out << "\n";
    random.write(out);
    out << "\n" << integrateUntil << " " << pendingFrames << " " << jumpsLeft << " " << stale << "\n";
    for (const auto* vectors : {&current.positions, &current.contextVelocities, &current.velocities, &current.forces})
        writeVectors(out, *vectors);
    out << current.time << " " << current.potential << " " << current.hamiltonian << " " << current.stepCount << "\n";
    writeVectors(out, left.positions);
    writeVectors(out, left.velocities);
    for (const Vec3& side : left.box)
        out << side[0] << " " << side[1] << " " << side[2] << " ";
    out << left.parameters.size();
    for (const auto& item : left.parameters)
        out << " " << item.first << " " << item.second;
    out << "\n" << left.stepCount << " " << left.time << "\n";
    string text = "forecast-integrator " + std::to_string(CHECKPOINT_VERSION) + " " + std::to_string(proposal->fingerprint) + "\n" + out.str();
    long long size = text.size();
    stream.write((const char*) &size, sizeof(size));
    stream.write(text.data(), size);
}

void PortableIntegrateForecastStepKernel::loadCheckpoint(std::istream& stream, const ForecastIntegrator& integrator) {
    long long size = 0;
    stream.read((char*) &size, sizeof(size));
    if (!stream || size <= 0 || size > (1LL << 32))
        throw OpenMMException("ForecastIntegrator: the checkpoint holds no ForecastIntegrator state");
    string text(size, '\0');
    stream.read(&text[0], size);
    std::istringstream in(text);
    string tag, rule;
    int version = 0;
    unsigned long long fingerprint = 0;
    in >> tag >> version >> fingerprint;
    if (tag != "forecast-integrator" || version != CHECKPOINT_VERSION)
        throw OpenMMException("ForecastIntegrator: the checkpoint holds no ForecastIntegrator state of version " + std::to_string(CHECKPOINT_VERSION));
    if (fingerprint != proposal->fingerprint)
        throw OpenMMException("ForecastIntegrator: the checkpoint was written with another proposal than " + proposal->description);
    ForecastStatistics loaded;
    loaded.read(in);
    in >> rule;
    double savedTemperature = readDouble(in), savedFriction = readDouble(in), savedStepSize = readDouble(in);
    if (rule != integrator.getAcceptance() || savedTemperature != integrator.getTemperature() || savedFriction != integrator.getFriction() ||
        savedStepSize != integrator.getStepSize()) {
        std::ostringstream message;
        message << "ForecastIntegrator: the checkpoint was written with acceptance '" << rule << "' at " << savedTemperature << " K, friction "
                << savedFriction << " /ps, step size " << savedStepSize << " ps; this integrator has '" << integrator.getAcceptance() << "', "
                << integrator.getTemperature() << " K, " << integrator.getFriction() << " /ps, " << integrator.getStepSize()
                << " ps: set them to the checkpoint's before loading it";
        throw OpenMMException(message.str());
    }
    size_t nBonds = 0;
    in >> nBonds;
    if (!in || (nBonds != 0 && nBonds != bonds.size()))
        throw OpenMMException("ForecastIntegrator: the checkpoint's ForecastIntegrator state is corrupt");
    vector<double> lengths(nBonds);
    for (double& length : lengths)
        length = readDouble(in);
    RandomStream loadedRandom;
    Snapshot loadedCurrent;
    Left loadedLeft;
    long long loadedUntil = -1;
    int loadedPending = 0, loadedLeftJumps = 0;
    bool loadedStale = true;
    try {
        loadedRandom.read(in);
        in >> loadedUntil >> loadedPending >> loadedLeftJumps >> loadedStale;
        for (auto* vectors : {&loadedCurrent.positions, &loadedCurrent.contextVelocities, &loadedCurrent.velocities, &loadedCurrent.forces})
            readVectors(in, *vectors);
        loadedCurrent.time = readDouble(in);
        loadedCurrent.potential = readDouble(in);
        loadedCurrent.hamiltonian = readDouble(in);
        in >> loadedCurrent.stepCount;
        readVectors(in, loadedLeft.positions);
        readVectors(in, loadedLeft.velocities);
        for (Vec3& side : loadedLeft.box)
            for (int k = 0; k < 3; k++)
                side[k] = readDouble(in);
        size_t nParameters = 0;
        in >> nParameters;
        for (size_t k = 0; k < nParameters && in; k++) {
            string name;
            in >> name;
            loadedLeft.parameters[name] = readDouble(in);
        }
        in >> loadedLeft.stepCount;
        loadedLeft.time = readDouble(in);
    }
    catch (const std::invalid_argument&) {
        in.setstate(std::ios::failbit);
    }
    if (!in)
        throw OpenMMException("ForecastIntegrator: the checkpoint's ForecastIntegrator state is corrupt");
    stats = loaded;
    referenceBondLengths = lengths;
    random = loadedRandom;
    stats.randomStream = random.describe();
    integrateUntil = loadedUntil;
    pendingFrames = loadedPending;
    jumpsLeft = loadedLeftJumps;
    stale = loadedStale;
    current = loadedCurrent;
    left = loadedLeft;
}
