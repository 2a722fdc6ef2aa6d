#ifndef OPENMM_FORECAST_SURROGATE_PROPOSAL_H_
#define OPENMM_FORECAST_SURROGATE_PROPOSAL_H_

#include "Proposal.h"
#include "openmm/Context.h"
#include "openmm/CustomIntegrator.h"
#include "openmm/System.h"
#include <memory>

namespace ForecastPlugin {

/**
 * The surrogate proposal (openmm_forecast.forecasters.surrogate.SurrogateForecaster): velocity Verlet (RATTLE with
 * constraints) on a surrogate System in a private Context, the same CustomIntegrator program as
 * openmm_forecast.velocity_verlet_integrator.  One frame per jump: the stride is the whole jump.  Volume-preserving
 * and time-reversible whatever the surrogate, so the Metropolis and ghmc rules are exact with it.
 */
class SurrogateProposal : public Proposal {
public:
    /**
     * @param path          a serialized System (XmlSerializer) with the target's particles, masses and constraints
     * @param target        the target System (checked against the surrogate)
     * @param jumpPs        length of a jump (ps), a whole number of stepSizePs
     * @param stepSizePs    the surrogate's time step (ps)
     * @param platformName  platform of the private Context ("Reference", "CPU", ...)
     * @param constraintTolerance  RATTLE tolerance
     * Throws OpenMMException naming the file and the problem.
     */
    SurrogateProposal(const std::string& path, const OpenMM::System& target, double jumpPs, double stepSizePs,
                      const std::string& platformName, double constraintTolerance);
    int numAtoms() const override { return system->getNumParticles(); }
    void forecast(const std::vector<double>& x, const std::vector<double>& v, int nFrames, std::vector<double>& outX,
                  std::vector<double>& outV) override;
    int stepsPerJump = 1;

private:
    std::unique_ptr<OpenMM::System> system;
    std::unique_ptr<OpenMM::CustomIntegrator> integrator;
    std::unique_ptr<OpenMM::Context> context;
    std::vector<OpenMM::Vec3> positions, velocities;
};

} // namespace ForecastPlugin

#endif
