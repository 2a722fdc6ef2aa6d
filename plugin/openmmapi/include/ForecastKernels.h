#ifndef OPENMM_FORECAST_KERNELS_H_
#define OPENMM_FORECAST_KERNELS_H_

#include "ForecastIntegrator.h"
#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include <iosfwd>

namespace ForecastPlugin {

/**
 * The kernel of a ForecastIntegrator: the whole cycle (segments, jumps, guards, accept or restore).
 */
class IntegrateForecastStepKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "IntegrateForecastStep";
    }
    IntegrateForecastStepKernel(std::string name, const OpenMM::Platform& platform) : OpenMM::KernelImpl(name, platform) {
    }
    /** Load the forecaster and check it against the System (throws OpenMMException naming the problem). */
    virtual void initialize(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator) = 0;
    /** Advance the Context by exactly steps steps of the integrator's step size. */
    virtual void execute(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator, int steps) = 0;
    virtual double computeKineticEnergy(OpenMM::ContextImpl& context, const ForecastIntegrator& integrator) = 0;
    virtual const ForecastStatistics& getStatistics() const = 0;
    virtual void createCheckpoint(std::ostream& stream) const = 0;
    /** Refuses a checkpoint of another proposal, rule, temperature, friction or step size than integrator's. */
    virtual void loadCheckpoint(std::istream& stream, const ForecastIntegrator& integrator) = 0;
};

/** Register the portable kernel on every Platform loaded so far that lacks one (idempotent). */
void registerForecastKernels();

} // namespace ForecastPlugin

#endif
