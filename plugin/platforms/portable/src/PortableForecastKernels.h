#ifndef OPENMM_FORECAST_PORTABLE_KERNELS_H_
#define OPENMM_FORECAST_PORTABLE_KERNELS_H_

#include "ForecastKernels.h"
#include "internal/ForecasterModel.h"
#include "openmm/LangevinMiddleIntegrator.h"
#include "openmm/Vec3.h"
#include <memory>
#include <random>

namespace ForecastPlugin {

/**
 * The cycle of a ForecastIntegrator on any Platform: the Context's state is read and written through ContextImpl
 * (host copies on GPU platforms), integration runs the Platform's own IntegrateLangevinMiddleStepKernel.
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
    void loadCheckpoint(std::istream& stream) override;

private:
    /** The Context's state at one instant: restore point of a jump and input of the forecaster. */
    struct Snapshot {
        std::vector<OpenMM::Vec3> positions, contextVelocities, velocities, forces;  // velocities: synchronous
        double time = 0, potential = 0, hamiltonian = 0;
        long long stepCount = 0;
    };
    void readIntegrator(const ForecastIntegrator& integrator);
    void cycle(long long endStep);
    bool jump(int nFrames);
    void integrate(int steps);
    void capture();
    Snapshot setVelocities(const std::vector<OpenMM::Vec3>& velocities, const Snapshot* samePositionsAs);
    void restore(const Snapshot& snapshot);
    void advanceClock(const Snapshot& before, int nFrames);
    void reject(const Snapshot& before, const std::string& reason, int nFrames);
    void thermalise(double spanPs);
    bool reequilibrationDue() const;
    bool driftExceeded() const { return std::abs(stats.driftKJ) > driftToleranceKT * kT; }
    bool maintain(long long remaining);
    std::string sanity(const std::vector<double>& x, const std::vector<double>& v, int nFrames) const;
    double kineticEnergy(const std::vector<OpenMM::Vec3>& velocities) const;

    OpenMM::ContextImpl* context = nullptr;
    std::unique_ptr<ForecasterModel> model;
    OpenMM::LangevinMiddleIntegrator inner{300.0, 1.0, 0.001};  // parameters copied from the ForecastIntegrator
    OpenMM::Kernel langevin;
    std::vector<double> masses, halfKick, thermalSpeed;
    std::vector<std::pair<int, int>> bonds;
    std::vector<double> referenceBondLengths;  // from the Context's state at the first step()
    int dof = 0, strideSteps = 1, segmentSteps = 1, maxFrames = 1, jumpsPerCycle = 4, growAfter = 4, reequilibrationSteps = 500;
    double stepSize = 0, kT = 0, temperature = 0, friction = 0, thermostatFriction = 0, tolerance = 1, driftToleranceKT = 5;
    double temperatureSigmas = 4, bondStretch = 1.5, constraintTolerance = 1e-5;
    bool metropolis = false, adaptSpan = true, thermostatted = true, hasConstraints = false, removesCom = false, hasAndersen = false;
    int groups = -1;
    Snapshot current;
    ForecastStatistics stats;
    std::mt19937_64 random;
    bool seeded = false;
};

} // namespace ForecastPlugin

#endif
