#ifndef OPENMM_FORECAST_INTEGRATOR_H_
#define OPENMM_FORECAST_INTEGRATOR_H_

#include "ForecastDefaults.h"
#include "ForecastStatistics.h"
#include "openmm/Integrator.h"
#include "openmm/Kernel.h"
#include <string>

namespace ForecastPlugin {

/**
 * An Integrator that advances a Context by proposed jumps judged on the target's energy: the cycle of the Python
 * ForecastAccelerator (openmm_forecast/accelerator.py and cycles.py, whose docstrings are the specification).
 *
 * The proposal is a TorchScript forecaster (a .pt file written by openmm_forecast.save_forecaster) or a surrogate
 * System (a serialized System, .xml: velocity Verlet on it over the whole jump, in a private Context).  The rule
 * (getAcceptance) is "tolerance" (accept |dH| <= energyTolerance kT; a rejected span is integrated), "metropolis"
 * (Langevin segments between jumps, Metropolis on dH, momentum reversal on rejection) or "ghmc" (no integration
 * of the target: partial momentum refresh, jump, ONE target energy, Metropolis, reversal on rejection).
 *
 * step(n) advances time and step count by exactly n steps.  A jump is atomic: it is carried out in the step()
 * call that reaches its last step; until then the Context holds the state before it while its clock advances
 * (plugin/README.md, "Long jumps under Simulation.step").
 *
 * Units: nm, ps, kJ/mol, K.  Defaults of the options are AcceleratorOptions' (generated into ForecastDefaults.h).
 */
class ForecastIntegrator : public OpenMM::Integrator {
public:
    /**
     * @param forecasterFile  the proposal: a TorchScript model file written by openmm_forecast.save_forecaster, or a
     *                        serialized surrogate System (a file ending in .xml)
     * @param temperature     heat bath temperature (K)
     * @param frictionCoeff   friction coefficient of the Langevin dynamics (1/ps)
     * @param stepSize        step size of the Langevin dynamics and of the clock (ps); must divide the jump
     */
    ForecastIntegrator(const std::string& forecasterFile, double temperature, double frictionCoeff, double stepSize);
    const std::string& getForecasterFile() const { return forecasterFile; }
    double getTemperature() const { return temperature; }
    void setTemperature(double temp);
    double getFriction() const { return friction; }
    void setFriction(double coeff);
    int getRandomNumberSeed() const { return randomNumberSeed; }
    /** Seed of the Langevin kernel's noise and of the jumps' own random stream (thermostat, Metropolis); 0: fresh. */
    void setRandomNumberSeed(int seed) { randomNumberSeed = seed; }

    /** Integration steps at the start of every cycle (0: one stride of the forecaster). */
    int getSegmentSteps() const { return segmentSteps; }
    void setSegmentSteps(int steps);
    /** Most jumps after one segment. */
    int getJumpsPerCycle() const { return jumpsPerCycle; }
    void setJumpsPerCycle(int jumps);
    /** Longest jump in frames (0: the forecaster's max_frames). */
    int getMaxFrames() const { return maxFrames; }
    void setMaxFrames(int frames);
    /** Span of the first jump in frames (0: the longest). */
    int getInitialFrames() const { return initialFrames; }
    void setInitialFrames(int frames);
    /** Halve the span after a rejection, double it after getGrowAfter() full-span acceptances in a row
     *  (-1: yes except in Metropolis mode, 0: no, 1: yes). */
    int getAdaptSpan() const { return adaptSpan; }
    void setAdaptSpan(int mode);
    int getGrowAfter() const { return growAfter; }
    void setGrowAfter(int jumps);
    /** Tolerance mode: accept a jump when |dH| <= this many kT. */
    double getEnergyTolerance() const { return energyTolerance; }
    void setEnergyTolerance(double kT);
    /** Re-equilibrate when the accumulated dH of accepted jumps exceeds this many kT. */
    double getDriftTolerance() const { return driftTolerance; }
    void setDriftTolerance(double kT);
    /** Re-equilibrate when the kinetic temperature is more than this many standard deviations from the target
     *  (<= 0 disables). */
    double getTemperatureSigmas() const { return temperatureSigmas; }
    void setTemperatureSigmas(double sigmas);
    /** Steps of Langevin dynamics per re-equilibration (0 disables re-equilibration). */
    int getReequilibrationSteps() const { return reequilibrationSteps; }
    void setReequilibrationSteps(int steps);
    /** "tolerance", "metropolis" or "ghmc" (see the class comment). */
    const std::string& getAcceptance() const { return acceptance; }
    void setAcceptance(const std::string& rule);
    /** Whether the rule is exact given a structure-preserving proposal (metropolis, ghmc). */
    bool isExactRule() const { return acceptance != "tolerance"; }
    /** Run metropolis or ghmc with a proposal not certified structure-preserving (a warning on stderr). */
    bool getAllowInexactMetropolis() const { return allowInexactMetropolis; }
    void setAllowInexactMetropolis(bool allow) { allowInexactMetropolis = allow; }
    /** ghmc: velocity memory a of the refresh v <- a v + sqrt(1 - a^2) sqrt(kT/m) xi, in [0, 1]
     *  (-1: exp(-friction * jump), or 0 without friction). */
    double getVelocityMemory() const { return velocityMemory; }
    void setVelocityMemory(double memory);
    /** Surrogate proposal: length of a jump (ps, a whole number of steps; 0 for a TorchScript forecaster). */
    double getJump() const { return jump; }
    void setJump(double ps);
    /** Surrogate proposal: its velocity Verlet time step (ps; 0: getStepSize()). */
    double getSurrogateStepSize() const { return surrogateStepSize; }
    void setSurrogateStepSize(double ps);
    /** Surrogate proposal: platform of its private Context (default "Reference": fastest for a small molecule). */
    const std::string& getSurrogatePlatform() const { return surrogatePlatform; }
    void setSurrogatePlatform(const std::string& name);
    /** Largest factor by which a bond may differ from its length in the Context's first state. */
    double getBondStretch() const { return bondStretch; }
    void setBondStretch(double factor);
    /** Follow every accepted jump by the exact Ornstein-Uhlenbeck velocity step over its span. */
    bool getThermostatJumps() const { return thermostatJumps; }
    void setThermostatJumps(bool enabled) { thermostatJumps = enabled; }
    /** Whether integration thermalises, so that re-equilibration resets the drift (-1: friction > 0 or an
     *  AndersenThermostat in the System, 0: no, 1: yes). */
    int getThermostatted() const { return thermostatted; }
    void setThermostatted(int mode);

    void step(int steps) override;
    /** What the integrator did so far (jumps, rejections by reason, time covered, wall clock, dH). */
    ForecastStatistics getStatistics() const;

protected:
    void initialize(OpenMM::ContextImpl& context) override;
    void cleanup() override;
    std::vector<std::string> getKernelNames() override;
    double computeKineticEnergy() override;
    // ghmc: the Context holds synchronous velocities (no half-kick offset, no forces for the kinetic energy)
    bool kineticEnergyRequiresForce() const override { return acceptance != "ghmc"; }
    double getVelocityTimeOffset() const override { return acceptance == "ghmc" ? 0.0 : getStepSize() / 2; }
    void stateChanged(OpenMM::State::DataType changed) override {}
    void createCheckpoint(std::ostream& stream) const override;
    void loadCheckpoint(std::istream& stream) override;

private:
    std::string forecasterFile;
    double temperature, friction;
    int randomNumberSeed = 0;
    int segmentSteps = 0, jumpsPerCycle = Defaults::jumpsPerCycle, maxFrames = 0, initialFrames = 0, adaptSpan = -1;
    int growAfter = Defaults::growAfter;
    double energyTolerance = Defaults::energyTolerance, driftTolerance = Defaults::driftTolerance;
    double temperatureSigmas = Defaults::temperatureSigmas;
    int reequilibrationSteps = Defaults::reequilibrationSteps;
    std::string acceptance = "tolerance";
    bool allowInexactMetropolis = Defaults::allowInexactMetropolis;
    double velocityMemory = -1, jump = 0, surrogateStepSize = 0;
    std::string surrogatePlatform = "Reference";
    double bondStretch = Defaults::bondStretch;
    bool thermostatJumps = Defaults::thermostatJumps;
    int thermostatted = -1;
    OpenMM::Kernel kernel;
};

} // namespace ForecastPlugin

#endif
