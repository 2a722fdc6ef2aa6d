#ifndef OPENMM_FORECAST_RANDOM_STREAM_H_
#define OPENMM_FORECAST_RANDOM_STREAM_H_

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <istream>
#include <ostream>
#include <random>
#include <sstream>
#include <string>

namespace ForecastPlugin {

/**
 * The jumps' random stream (thermostat noise, momentum refresh, Metropolis uniforms): NumPy's PCG64 bit generator
 * (128-bit LCG, XSL-RR output; the same raw 64-bit numbers as numpy.random.PCG64 from the same state and increment),
 * uniforms as NumPy's Generator.random() ((u >> 11) * 2^-53), normals by Marsaglia's polar method (one at a time,
 * the second of each pair kept for the next call).  NumPy's standard_normal uses a ziggurat instead, so the
 * normals are not NumPy's; tests/test_plugin.py gives the Python driver this stream (state read from the plugin)
 * to compare the two drivers bit for bit.  The whole state is checkpointed.
 */
class RandomStream {
public:
    /** A state derived from seed (splitmix64); 0: from std::random_device. */
    void seed(unsigned long long seed) {
        if (seed == 0)
            seed = ((unsigned long long) std::random_device()() << 32) ^ std::random_device()();
        unsigned long long s = seed;
        unsigned long long words[4];
        for (auto& word : words)
            word = splitmix64(s);
        state = ((__uint128_t) words[0] << 64) | words[1];
        increment = (((__uint128_t) words[2] << 64) | words[3]) | 1u;
        hasSpare = false;
        spare = 0;
    }
    unsigned long long next64() {
        const __uint128_t multiplier = ((__uint128_t) 0x2360ED051FC65DA4ULL << 64) | 0x4385DF649FCCF645ULL;
        state = state * multiplier + increment;
        unsigned long long value = (unsigned long long) (state >> 64) ^ (unsigned long long) state;
        unsigned rotation = (unsigned) (state >> 122);
        return (value >> rotation) | (value << ((-rotation) & 63));
    }
    double uniform() {
        return (next64() >> 11) * (1.0 / 9007199254740992.0);
    }
    double normal() {
        if (hasSpare) {
            hasSpare = false;
            return spare;
        }
        double u, v, s;
        do {
            u = 2.0 * uniform() - 1.0;
            v = 2.0 * uniform() - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        double factor = std::sqrt(-2.0 * std::log(s) / s);
        spare = v * factor;
        hasSpare = true;
        return u * factor;
    }
    /** "STATE INCREMENT" as hexadecimal 128-bit numbers (what numpy.random.PCG64().state takes), then the spare. */
    std::string describe() const {
        std::ostringstream out;
        out << "0x" << hex128(state) << " 0x" << hex128(increment);
        return out.str();
    }
    void write(std::ostream& out) const {
        out << describe() << " " << hasSpare << " " << std::hexfloat << spare << std::defaultfloat;
    }
    void read(std::istream& in) {
        std::string a, b, c;
        in >> a >> b >> hasSpare >> c;
        state = parse128(a);
        increment = parse128(b);
        spare = std::strtod(c.c_str(), nullptr);
    }

private:
    static unsigned long long splitmix64(unsigned long long& x) {
        unsigned long long z = (x += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    static std::string hex128(__uint128_t value) {
        std::ostringstream out;
        out << std::hex << std::setfill('0') << std::setw(16) << (unsigned long long) (value >> 64) << std::setw(16)
            << (unsigned long long) value;
        return out.str();
    }
    static __uint128_t parse128(const std::string& text) {
        if (text.size() != 34 || text.compare(0, 2, "0x") != 0)
            throw std::invalid_argument("not a 128-bit hexadecimal number");
        return ((__uint128_t) std::stoull(text.substr(2, 16), nullptr, 16) << 64) | std::stoull(text.substr(18, 16), nullptr, 16);
    }
    __uint128_t state = 0, increment = 1;
    bool hasSpare = false;
    double spare = 0;
};

} // namespace ForecastPlugin

#endif
