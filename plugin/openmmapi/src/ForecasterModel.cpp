// The only translation unit that includes torch headers (they dominate the build time).
#include "internal/ForecasterModel.h"
#include "openmm/OpenMMException.h"
#include <torch/script.h>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

using namespace ForecastPlugin;
using OpenMM::OpenMMException;

struct ForecasterModel::Impl {
    torch::jit::Module module;
    torch::Dtype dtype = torch::kFloat32;
};

namespace {

/** Top-level "key": value pairs of a JSON object, values as raw text (strings unquoted, no escapes resolved). */
std::map<std::string, std::string> topLevelFields(const std::string& text) {
    std::map<std::string, std::string> fields;
    int depth = 0;
    size_t i = 0, n = text.size();
    auto readString = [&](size_t& j) {
        std::string out;
        for (++j; j < n && text[j] != '"'; ++j) {
            if (text[j] == '\\' && j + 1 < n)
                ++j;
            out += text[j];
        }
        ++j;
        return out;
    };
    while (i < n) {
        char c = text[i];
        if (c == '"') {
            std::string s = readString(i);
            if (depth != 1)
                continue;
            size_t j = i;
            while (j < n && std::isspace((unsigned char) text[j]))
                ++j;
            if (j >= n || text[j] != ':')
                continue;
            for (++j; j < n && std::isspace((unsigned char) text[j]); ++j)
                ;
            if (j < n && text[j] == '"') {
                fields[s] = readString(j);
                i = j;
                continue;
            }
            size_t start = j;
            int inner = 0;
            for (; j < n; ++j) {  // a number, literal, array or object: up to the next top-level , or }
                if (text[j] == '"') {
                    readString(j);
                    --j;
                    continue;
                }
                if (text[j] == '{' || text[j] == '[')
                    ++inner;
                else if (text[j] == '}' || text[j] == ']') {
                    if (inner == 0)
                        break;
                    --inner;
                }
                else if (text[j] == ',' && inner == 0)
                    break;
            }
            fields[s] = text.substr(start, j - start);
            while (!fields[s].empty() && std::isspace((unsigned char) fields[s].back()))
                fields[s].pop_back();
            i = j;
            continue;
        }
        if (c == '{' || c == '[')
            ++depth;
        else if (c == '}' || c == ']')
            --depth;
        ++i;
    }
    return fields;
}


} // namespace

ForecasterModel::ForecasterModel(const std::string& path) : impl(new Impl()) {
    std::ifstream probe(path);
    if (!probe)
        throw OpenMMException("ForecastIntegrator: forecaster model file '" + path + "' does not exist or is not readable");
    torch::jit::ExtraFilesMap extra{{"metadata.json", ""}};
    try {
        impl->module = torch::jit::load(path, torch::kCPU, extra);
    }
    catch (const c10::Error& error) {  // its what() carries libtorch's C++ stack: the message alone
        throw OpenMMException("ForecastIntegrator: '" + path + "' is not a readable TorchScript forecaster (nor a surrogate System "
                              "file ending in .xml): " + error.what_without_backtrace());
    }
    catch (const std::exception& error) {
        throw OpenMMException("ForecastIntegrator: '" + path + "' is not a readable TorchScript forecaster (nor a surrogate System "
                              "file ending in .xml): " + error.what());
    }
    impl->module.eval();
    const std::string& text = extra["metadata.json"];
    if (text.empty())
        throw OpenMMException("ForecastIntegrator: '" + path + "' has no openmm-forecast metadata (metadata.json); "
                              "write forecasters with openmm_forecast.save_forecaster");
    std::map<std::string, std::string> fields = topLevelFields(text);
    try {
        architecture = fields.at("architecture");
        stridePs = std::stod(fields.at("stride_ps"));
        maxFrames = std::stoi(fields.at("max_frames"));
        history = std::stoi(fields.at("history"));
        auto temperature = fields.find("temperature_K");
        if (temperature != fields.end() && temperature->second != "null")
            temperatureK = std::stod(temperature->second);
    }
    catch (const std::exception&) {
        throw OpenMMException("ForecastIntegrator: the metadata of '" + path + "' lacks or garbles stride_ps, max_frames or history");
    }
    if (!(stridePs > 0) || maxFrames < 1 || history < 1)
        throw OpenMMException("ForecastIntegrator: the metadata of '" + path + "' has an invalid stride_ps, max_frames or history");
    if (!impl->module.hasattr("atomic_numbers"))
        throw OpenMMException("ForecastIntegrator: the module in '" + path + "' has no buffer atomic_numbers");
    torch::Tensor numbers = impl->module.attr("atomic_numbers").toTensor().to(torch::kInt64).contiguous();
    for (int k = 0; k < numbers.numel(); k++)
        atomicNumbers.push_back((int) numbers.data_ptr<int64_t>()[k]);
    for (const auto& parameter : impl->module.parameters())
        if (parameter.is_floating_point()) {
            impl->dtype = parameter.scalar_type();
            break;
        }
    if (impl->module.parameters().size() == 0)
        for (const auto& buffer : impl->module.buffers())
            if (buffer.is_floating_point()) {
                impl->dtype = buffer.scalar_type();
                break;
            }
    // Certified by save_forecaster's metadata (Forecaster.structure_preserving: extra["structure_preserving"]).
    structurePreserving = text.find("\"structure_preserving\": true") != std::string::npos;
    description = "TorchScript forecaster '" + path + "' (" + architecture + ")";
    fingerprint = fileFingerprint(path);
}

ForecasterModel::~ForecasterModel() = default;

void ForecasterModel::forecast(const std::vector<double>& x, const std::vector<double>& v, int nFrames,
                               std::vector<double>& outX, std::vector<double>& outV) {
    const int n = numAtoms();
    torch::InferenceMode guard;
    auto options = torch::TensorOptions().dtype(torch::kFloat64);
    // from_blob does not copy; .to() makes the model's dtype (float32 rounds to nearest, as torch.as_tensor does).
    torch::Tensor positions = torch::from_blob((void*) x.data(), {1, 1, n, 3}, options).to(impl->dtype);
    torch::Tensor velocities = torch::from_blob((void*) v.data(), {1, 1, n, 3}, options).to(impl->dtype);
    auto result = impl->module.forward({positions, velocities, (int64_t) nFrames}).toTuple();
    if (result->elements().size() != 2)
        throw std::runtime_error("the forecaster returned a tuple of " + std::to_string(result->elements().size()) + " elements, expected 2");
    torch::Tensor newX = result->elements()[0].toTensor(), newV = result->elements()[1].toTensor();
    std::vector<int64_t> expected{1, nFrames, n, 3};
    if (newX.sizes().vec() != expected || newV.sizes().vec() != expected)
        throw std::runtime_error("the forecaster returned arrays of the wrong shape");
    newX = newX.to(torch::kCPU, torch::kFloat64).contiguous();
    newV = newV.to(torch::kCPU, torch::kFloat64).contiguous();
    outX.assign(newX.data_ptr<double>(), newX.data_ptr<double>() + newX.numel());
    outV.assign(newV.data_ptr<double>(), newV.data_ptr<double>() + newV.numel());
}
