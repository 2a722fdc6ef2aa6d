#ifndef OPENMM_FORECAST_INTEGRATOR_H_
#define OPENMM_FORECAST_INTEGRATOR_H_

#include "ForecastStatistics.h"
#include "openmm/Integrator.h"
#include "openmm/Kernel.h"
#include <string>

namespace ForecastPlugin {

/**
 * An Integrator that replaces stretches of Langevin dynamics (LangevinMiddleIntegrator) by guarded forecast
 * jumps of a TorchScript forecaster written by openmm_forecast.save_forecaster.
 *
 * step(n) advances the Context by exactly n steps of getStepSize(), in cycles: a segment of the core
 * LangevinMiddle kernel, then up to getJumpsPerCycle() jumps, each one checked (non-finite values, stretched
 * bonds, then the energy change dH = H_after - H_before of the synchronous state against a tolerance in kT or a
 * Metropolis test) and either accepted (time and step count advance by the span, the O-step of the thermostat
 * acts on the velocities over the span) or undone (the exact state before the jump is restored and the span is
 * integrated; Metropolis mode: the configuration is kept with reversed velocities).  This is the cycle of the
 * Python ForecastAccelerator (openmm_forecast/accelerator.py), whose module docstring is the specification.
 *
 * Units: nm, ps, kJ/mol, K.  Options are plain numbers; 0 (or a negative value, where noted) means "default".
 */
class ForecastIntegrator : public OpenMM::Integrator {
public:
    /**
     * @param forecasterFile  a TorchScript model file written by openmm_forecast.save_forecaster
     * @param temperature     heat bath temperature (K)
     * @param frictionCoeff   friction coefficient of the Langevin dynamics (1/ps)
     * @param stepSize        step size of the Langevin dynamics (ps); must divide the forecaster's stride
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
    /** Most jumps after one segment (default 4). */
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
    /** Tolerance mode: accept a jump when |dH| <= this many kT (default 1). */
    double getEnergyTolerance() const { return energyTolerance; }
    void setEnergyTolerance(double kT);
    /** Re-equilibrate when the accumulated dH of accepted jumps exceeds this many kT (default 5). */
    double getDriftTolerance() const { return driftTolerance; }
    void setDriftTolerance(double kT);
    /** Re-equilibrate when the kinetic temperature is more than this many standard deviations from the target
     *  (default 4; <= 0 disables). */
    double getTemperatureSigmas() const { return temperatureSigmas; }
    void setTemperatureSigmas(double sigmas) { temperatureSigmas = sigmas; }
    /** Steps of Langevin dynamics per re-equilibration (default 500; 0 disables re-equilibration). */
    int getReequilibrationSteps() const { return reequilibrationSteps; }
    void setReequilibrationSteps(int steps);
    /** Exact mode: accept with probability min(1, exp(-dH/kT)), reverse the velocities on rejection. */
    bool getMetropolis() const { return metropolis; }
    void setMetropolis(bool enabled) { metropolis = enabled; }
    /** Largest factor by which a bond may differ from its length in the Context's first state (default 1.5). */
    double getBondStretch() const { return bondStretch; }
    void setBondStretch(double factor);
    /** Follow every accepted jump by the exact Ornstein-Uhlenbeck velocity step over its span (default true). */
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
    bool kineticEnergyRequiresForce() const override { return true; }
    double getVelocityTimeOffset() const override { return getStepSize() / 2; }
    void stateChanged(OpenMM::State::DataType changed) override {}
    void createCheckpoint(std::ostream& stream) const override;
    void loadCheckpoint(std::istream& stream) override;

private:
    std::string forecasterFile;
    double temperature, friction;
    int randomNumberSeed = 0;
    int segmentSteps = 0, jumpsPerCycle = 4, maxFrames = 0, initialFrames = 0, adaptSpan = -1, growAfter = 4;
    double energyTolerance = 1.0, driftTolerance = 5.0, temperatureSigmas = 4.0;
    int reequilibrationSteps = 500;
    bool metropolis = false;
    double bondStretch = 1.5;
    bool thermostatJumps = true;
    int thermostatted = -1;
    OpenMM::Kernel kernel;
};

} // namespace ForecastPlugin

#endif
