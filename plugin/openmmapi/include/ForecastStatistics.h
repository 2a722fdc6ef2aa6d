#ifndef OPENMM_FORECAST_STATISTICS_H_
#define OPENMM_FORECAST_STATISTICS_H_

#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace ForecastPlugin {

/**
 * What a ForecastIntegrator did, with the fields of the Python AcceleratorStats (times in ps, energies in kJ/mol,
 * wall clock in s).  Rejection reasons: "nonfinite", "bond", "energy", "metropolis" and "forecaster" (the model
 * raised an exception or returned arrays of the wrong shape).
 */
struct ForecastStatistics {
    long long jumpsAttempted = 0, jumpsAccepted = 0, reequilibrations = 0;
    std::map<std::string, long long> rejections{{"nonfinite", 0}, {"bond", 0}, {"energy", 0}, {"metropolis", 0}, {"forecaster", 0}};
    std::map<int, long long> attemptedByFrames, acceptedByFrames;
    double jumpedPs = 0, integratedPs = 0, keptPs = 0;
    /** Time the clock has run into a jump not yet carried out (it is, with its whole span, in the call that reaches its
     *  end): jumpedPs + integratedPs + keptPs + pendingPs is the time covered. */
    double pendingPs = 0;
    /** Wall-clock seconds in "integration", "forecast", "guard" (sanity checks, projection, energy) and "transfer";
     *  "energy" is the part of "guard" and "transfer" spent in force and energy evaluations, "proposal_steps" the part
     *  of "forecast" spent in a surrogate's integration steps. */
    std::map<std::string, double> wallSeconds{{"integration", 0}, {"forecast", 0}, {"guard", 0}, {"transfer", 0}, {"energy", 0},
                                              {"proposal_steps", 0}};
    /** dH of the most recent energy-checked jumps (at most maxDhSamples), accepted or rejected. */
    std::vector<double> dhKJ;
    size_t maxDhSamples = 10000;
    /** Loop state: current span, accumulated drift of accepted jumps, whether jumps are switched off (NVE). */
    int spanFrames = 0, acceptedInRow = 0;
    double driftKJ = 0;
    bool jumpsSwitchedOff = false;
    /** State of the jumps' random stream (RandomStream::describe) when the Context was created or a checkpoint loaded. */
    std::string randomStream;

    void recordDh(double dh);
    /** Everything as one JSON object (what Python reads). */
    std::string toJson() const;
    void write(std::ostream& stream) const;
    void read(std::istream& stream);
};

} // namespace ForecastPlugin

#endif
