#ifndef OPENMM_FORECAST_PORTABLE_KERNELS_H_
#define OPENMM_FORECAST_PORTABLE_KERNELS_H_

#include "ForecastKernels.h"
#include "internal/Proposal.h"
#include "internal/RandomStream.h"
#include "openmm/LangevinMiddleIntegrator.h"
#include "openmm/Vec3.h"
#include <map>
#include <memory>

namespace ForecastPlugin {

/**
 * The cycle of a ForecastIntegrator on any Platform: the Context's state is read and written through ContextImpl
 * (host copies on GPU platforms), integration runs the Platform's own IntegrateLangevinMiddleStepKernel.
 *
 * The schedule (integration up to a step, a planned jump, jumps left in the cycle) is explicit and survives the
 * end of a step() call, so that a jump longer than a call is carried out in the call that reaches its end.
 */
class PortableIntegrateForecastStepKernel : public IntegrateForecastStepKernel {
public:
    PortableIntegrateForecastStepKernel(std::string name, const OpenMM::Platform& platform) : IntegrateForecastStepKernel(name, platform) {
    }
    void initialize(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator) override;
    void execute(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator, int steps) override;
    double computeKineticEnergy(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator) override;
    const ForecastStatistics& getStatistics() const override { return stats; }
    void createCheckpoint(std::ostream& stream) const override;
    void loadCheckpoint(std::istream& stream, const ForecastIntegrator& integrator) override;

private:
    /** The Context's state at one instant: restore point of a jump and input of the proposal. */
    struct Snapshot {
        std::vector<OpenMM::Vec3> positions, contextVelocities, velocities, forces;  // velocities: synchronous
        double time = 0, potential = 0, hamiltonian = 0;
        long long stepCount = 0;
    };
    /** What the Context held when execute() returned (a different Context at the next call restarts the cycle). */
    struct Left {
        std::vector<OpenMM::Vec3> positions, velocities;
        OpenMM::Vec3 box[3];
        std::map<std::string, double> parameters;
        long long stepCount = -1;
        double time = 0;
    };
    void readIntegrator(const ForecastIntegrator& integrator);
    void refuseUnsupported(const OpenMM::System& system) const;
    bool jump(int nFrames);
    void integrate(int steps);
    void capture();
    Snapshot setVelocities(const std::vector<OpenMM::Vec3>& velocities, const Snapshot* samePositionsAs);
    void restore(const Snapshot& snapshot);
    void advanceClock(const Snapshot& before, long long spanSteps);
    void reject(const Snapshot& before, const std::string& reason, int nFrames);
    void thermalise(double spanPs);
    double velocityDecay(double spanPs) const;
    bool reequilibrationDue() const;
    bool driftExceeded() const { return std::abs(stats.driftKJ) > driftToleranceKT * kT; }
    bool maintain();
    void remember(Left& left) const;
    bool holdsLeft() const;
    std::string sanity(const std::vector<double>& x, const std::vector<double>& v, int nFrames) const;
    double kineticEnergy(const std::vector<OpenMM::Vec3>& velocities) const;

    OpenMM::ContextImpl* context = nullptr;
    std::unique_ptr<Proposal> proposal;
    OpenMM::LangevinMiddleIntegrator inner{300.0, 1.0, 0.001};  // parameters copied from the ForecastIntegrator
    OpenMM::Kernel langevin;
    std::vector<double> masses, halfKick, thermalSpeed;
    std::vector<std::pair<int, int>> bonds;
    std::vector<double> referenceBondLengths;  // from the Context's state at the first step()
    int dof = 0, strideSteps = 1, segmentSteps = 1, maxFrames = 1, jumpsPerCycle = 4, growAfter = 4, reequilibrationSteps = 500;
    double stepSize = 0, kT = 0, temperature = 0, friction = 0, thermostatFriction = 0, tolerance = 1, driftToleranceKT = 5;
    double temperatureSigmas = 4, bondStretch = 1.5, constraintTolerance = 1e-5, velocityMemory = -1;
    std::string acceptance = "tolerance";
    bool exact = false, ghmc = false, adaptSpan = true, thermostatted = true, hasConstraints = false, removesCom = false, hasAndersen = false;
    int groups = -1;
    // the schedule
    long long integrateUntil = -1;  // integrate the target up to this step (segment, re-equilibration, rejected span)
    int pendingFrames = 0;          // a planned jump from `current`, carried out when the clock reaches its end
    int jumpsLeft = 0;              // jumps left in the current cycle
    bool stale = true;              // `current` does not describe the Context (it was integrated since)
    Snapshot current;
    Left left;
    // buffers reused from jump to jump and call to call (no allocation per jump)
    std::vector<double> proposalX, proposalV, forecastX, forecastV;
    std::vector<OpenMM::Vec3> candidatePositions, candidateVelocities;
    mutable Left now;  // holdsLeft()'s reading of the Context
    double perAtomStepSize = -1, perAtomKT = -1;  // halfKick and thermalSpeed were computed for these
    ForecastStatistics stats;
    RandomStream random;
};

} // namespace ForecastPlugin

#endif
