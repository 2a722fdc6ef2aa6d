#ifndef OPENMM_FORECAST_FORECASTER_MODEL_H_
#define OPENMM_FORECAST_FORECASTER_MODEL_H_

#include "Proposal.h"
#include <memory>
#include <string>
#include <vector>

namespace ForecastPlugin {

/**
 * A TorchScript forecaster file of openmm_forecast.save_forecaster: the scripted module
 * forward(positions[B,H,N,3], velocities[B,H,N,3], n_frames) -> (positions[B,K,N,3], velocities[B,K,N,3]) and its
 * metadata (extra file metadata.json).  This class keeps torch out of every other translation unit.
 */
class ForecasterModel : public Proposal {
public:
    /** Load a model file; throws OpenMMException naming the file and the problem. */
    explicit ForecasterModel(const std::string& path);
    ~ForecasterModel();
    int numAtoms() const override { return atomicNumbers.size(); }
    std::vector<int> atomicNumbers;
    double temperatureK = 0;  // 0: not recorded
    std::string architecture;
    /** Throws std::exception when the model fails or returns arrays of the wrong shape. */
    void forecast(const std::vector<double>& x, const std::vector<double>& v, int nFrames,
                  std::vector<double>& outX, std::vector<double>& outV) override;

private:
    struct Impl;
    std::unique_ptr<Impl> impl;
};

} // namespace ForecastPlugin

#endif
