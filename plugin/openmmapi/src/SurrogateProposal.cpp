#include "internal/SurrogateProposal.h"
#include "openmm/CMMotionRemover.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/serialization/XmlSerializer.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <set>
#include <tuple>

using namespace ForecastPlugin;
using namespace OpenMM;
using std::string;
using std::vector;

unsigned long long ForecastPlugin::fileFingerprint(const string& path) {
    std::ifstream file(path, std::ios::binary);
    unsigned long long hash = 1469598103934665603ULL;
    char buffer[65536];
    while (file) {
        file.read(buffer, sizeof(buffer));
        for (std::streamsize k = 0; k < file.gcount(); ++k)
            hash = (hash ^ (unsigned char) buffer[k]) * 1099511628211ULL;
    }
    return hash;
}

namespace {

std::set<std::tuple<int, int, double>> constraintTable(const System& system) {
    std::set<std::tuple<int, int, double>> rows;
    for (int k = 0; k < system.getNumConstraints(); k++) {
        int i, j;
        double length;
        system.getConstraintParameters(k, i, j, length);
        rows.insert({std::min(i, j), std::max(i, j), length});
    }
    return rows;
}

bool close(double a, double b) {
    return std::abs(a - b) <= 1e-9 * std::abs(b);  // relative, as surrogate.py's check (lengths and masses from XML text)
}

} // namespace

SurrogateProposal::SurrogateProposal(const string& path, const System& target, double jumpPs, double stepSizePs,
                                     const string& platformName, double constraintTolerance) {
    string where = "ForecastIntegrator: surrogate System '" + path + "'";
    std::ifstream file(path);
    if (!file)
        throw OpenMMException(where + " does not exist or is not readable");
    try {
        system.reset(XmlSerializer::deserialize<System>(file));
    }
    catch (const std::exception& error) {
        throw OpenMMException(where + " is not a serialized OpenMM System: " + error.what());
    }
    if (system == nullptr)
        throw OpenMMException(where + " is not a serialized OpenMM System");
    // No CMMotionRemover in the proposal (as openmm_forecast.forecasters.surrogate.without_motion_remover): it would
    // take the centre-of-mass momentum out of every jump of a target that keeps it, a map that is not reversible;
    // velocity Verlet conserves the total momentum of a translation-invariant surrogate by itself.
    for (int i = system->getNumForces() - 1; i >= 0; i--)
        if (dynamic_cast<const CMMotionRemover*>(&system->getForce(i)) != nullptr)
            system->removeForce(i);
    if (system->getNumParticles() != target.getNumParticles())
        throw OpenMMException(where + " has " + std::to_string(system->getNumParticles()) + " particles, the target System " +
                              std::to_string(target.getNumParticles()) + ": a surrogate must describe the same atoms");
    for (int i = 0; i < target.getNumParticles(); i++)
        if (!close(system->getParticleMass(i), target.getParticleMass(i)))
            throw OpenMMException(where + ": the mass of particle " + std::to_string(i) + " differs from the target's (" +
                                  std::to_string(system->getParticleMass(i)) + " vs " + std::to_string(target.getParticleMass(i)) +
                                  " amu): the proposal would not preserve the target's phase-space volume");
    auto mine = constraintTable(*system), theirs = constraintTable(target);
    bool same = mine.size() == theirs.size();
    for (auto a = mine.begin(), b = theirs.begin(); same && a != mine.end(); ++a, ++b)
        same = std::get<0>(*a) == std::get<0>(*b) && std::get<1>(*a) == std::get<1>(*b) && close(std::get<2>(*a), std::get<2>(*b));
    if (!same)
        throw OpenMMException(where + " has " + std::to_string(mine.size()) + " constraints, the target " + std::to_string(theirs.size()) +
                              " (or their atoms or lengths differ): build the surrogate with the target's constraints");
    if (!(jumpPs > 0) || !(stepSizePs > 0))
        throw OpenMMException("ForecastIntegrator: a surrogate proposal needs jump > 0 and surrogateStepSize > 0 ps");
    double ratio = jumpPs / stepSizePs;
    stepsPerJump = (int) std::lround(ratio);
    if (stepsPerJump < 1 || std::abs(ratio - stepsPerJump) > 1e-6 * ratio)
        throw OpenMMException("ForecastIntegrator: the jump (" + std::to_string(jumpPs) + " ps) is not a whole number of the "
                              "surrogate's steps (" + std::to_string(stepSizePs) + " ps)");
    // openmm_forecast.velocity_verlet_integrator, instruction for instruction (the same arithmetic on a platform).
    integrator.reset(new CustomIntegrator(stepSizePs));
    integrator->addPerDofVariable("x1", 0.0);
    integrator->addUpdateContextState();
    integrator->addComputePerDof("v", "v + 0.5*dt*f/m");
    integrator->addComputePerDof("x", "x + dt*v");
    integrator->addComputePerDof("x1", "x");
    integrator->addConstrainPositions();
    integrator->addComputePerDof("v", "v + 0.5*dt*f/m + (x - x1)/dt");
    integrator->addConstrainVelocities();
    integrator->setConstraintTolerance(constraintTolerance);
    try {
        context.reset(new Context(*system, *integrator, Platform::getPlatformByName(platformName)));
    }
    catch (const std::exception& error) {
        throw OpenMMException(where + ": no private Context on platform '" + platformName + "': " + error.what());
    }
    stridePs = jumpPs;
    maxFrames = 1;
    history = 1;
    structurePreserving = true;
    description = "velocity Verlet on the surrogate System '" + path + "'";
    fingerprint = fileFingerprint(path);
}

void SurrogateProposal::forecast(const vector<double>& x, const vector<double>& v, int nFrames, vector<double>& outX,
                                 vector<double>& outV) {
    int n = numAtoms();
    positions.resize(n);
    velocities.resize(n);
    for (int i = 0; i < n; i++) {
        positions[i] = Vec3(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        velocities[i] = Vec3(v[3 * i], v[3 * i + 1], v[3 * i + 2]);
    }
    context->setPositions(positions);
    context->setVelocities(velocities);
    outX.resize((size_t) nFrames * 3 * n);
    outV.resize((size_t) nFrames * 3 * n);
    for (int frame = 0; frame < nFrames; frame++) {
        auto start = std::chrono::steady_clock::now();
        integrator->step(stepsPerJump);
        stepSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        State state = context->getState(State::Positions | State::Velocities);
        const vector<Vec3>& p = state.getPositions();
        const vector<Vec3>& u = state.getVelocities();
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 3; k++) {
                outX[((size_t) frame * n + i) * 3 + k] = p[i][k];
                outV[((size_t) frame * n + i) * 3 + k] = u[i][k];
            }
    }
}
