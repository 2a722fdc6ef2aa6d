#ifndef OPENMM_FORECAST_PROPOSAL_H_
#define OPENMM_FORECAST_PROPOSAL_H_

#include <string>
#include <vector>

namespace ForecastPlugin {

/**
 * What proposes a jump: maps one synchronous state (x, v) to nFrames frames stridePs apart.
 * Implementations: ForecasterModel (a TorchScript forecaster) and SurrogateProposal (velocity Verlet on a
 * surrogate System).
 */
class Proposal {
public:
    virtual ~Proposal() = default;
    virtual int numAtoms() const = 0;
    /**
     * x, v: numAtoms*3 values (nm, nm/ps).  outX, outV: nFrames*numAtoms*3.  Throws std::exception when the
     * proposal fails (a rejected jump, never a crash).
     */
    virtual void forecast(const std::vector<double>& x, const std::vector<double>& v, int nFrames, std::vector<double>& outX,
                          std::vector<double>& outV) = 0;
    double stridePs = 0;
    int maxFrames = 1, history = 1;
    /** Volume-preserving and time-reversible, so that the Metropolis and ghmc rules are exact with it. */
    bool structurePreserving = false;
    std::string description;
    /** FNV-1a hash of the file's bytes (checkpoints refuse another proposal). */
    unsigned long long fingerprint = 0;
    /** Wall-clock seconds spent integrating (a surrogate's steps; 0 for a forecaster, which has none). */
    double stepSeconds = 0;
};

/** FNV-1a hash of a file's bytes (0 when unreadable). */
unsigned long long fileFingerprint(const std::string& path);

} // namespace ForecastPlugin

#endif
