#include "ForecastStatistics.h"
#include <cmath>
#include <istream>
#include <ostream>
#include <sstream>

using namespace ForecastPlugin;

void ForecastStatistics::recordDh(double dh) {
    if (!std::isfinite(dh))
        return;
    dhKJ.push_back(dh);
    if (dhKJ.size() > maxDhSamples)
        dhKJ.erase(dhKJ.begin(), dhKJ.begin() + (dhKJ.size() - maxDhSamples));
}

namespace {
template <class Map>
void writeMap(std::ostream& out, const Map& map) {
    out << "{";
    bool first = true;
    for (const auto& item : map) {
        out << (first ? "" : ", ") << '"' << item.first << "\": " << item.second;
        first = false;
    }
    out << "}";
}
} // namespace

std::string ForecastStatistics::toJson() const {
    std::ostringstream out;
    out.precision(17);
    out << "{\"jumps_attempted\": " << jumpsAttempted << ", \"jumps_accepted\": " << jumpsAccepted << ", \"rejections\": ";
    writeMap(out, rejections);
    out << ", \"attempted_by_frames\": ";
    writeMap(out, attemptedByFrames);
    out << ", \"accepted_by_frames\": ";
    writeMap(out, acceptedByFrames);
    out << ", \"jumped_ps\": " << jumpedPs << ", \"integrated_ps\": " << integratedPs << ", \"kept_ps\": " << keptPs << ", \"pending_ps\": " << pendingPs
        << ", \"reequilibrations\": " << reequilibrations << ", \"wall_s\": ";
    writeMap(out, wallSeconds);
    out << ", \"dh_kJ\": [";
    for (size_t i = 0; i < dhKJ.size(); i++)
        out << (i ? ", " : "") << dhKJ[i];
    out << "], \"max_dh_samples\": " << maxDhSamples << ", \"span_frames\": " << spanFrames << ", \"accepted_in_row\": " << acceptedInRow
        << ", \"drift_kJ\": " << driftKJ << ", \"jumps_switched_off\": " << (jumpsSwitchedOff ? "true" : "false") << ", \"random_stream\": \"" << randomStream << "\"}";
    return out.str();
}

void ForecastStatistics::write(std::ostream& out) const {
    out << jumpsAttempted << " " << jumpsAccepted << " " << reequilibrations << " " << jumpedPs << " " << integratedPs << " " << keptPs << " " << pendingPs
        << " " << spanFrames << " " << acceptedInRow << " " << driftKJ << " " << jumpsSwitchedOff << " " << maxDhSamples << "\n";
    out << rejections.size();
    for (const auto& item : rejections)
        out << " " << item.first << " " << item.second;
    out << "\n" << wallSeconds.size();
    for (const auto& item : wallSeconds)
        out << " " << item.first << " " << item.second;
    for (const auto* map : {&attemptedByFrames, &acceptedByFrames}) {
        out << "\n" << map->size();
        for (const auto& item : *map)
            out << " " << item.first << " " << item.second;
    }
    out << "\n" << dhKJ.size();
    for (double dh : dhKJ)
        out << " " << dh;
    out << "\n";
}

void ForecastStatistics::read(std::istream& in) {
    in >> jumpsAttempted >> jumpsAccepted >> reequilibrations >> jumpedPs >> integratedPs >> keptPs >> pendingPs >> spanFrames >> acceptedInRow >>
        driftKJ >> jumpsSwitchedOff >> maxDhSamples;
    size_t n = 0;
    in >> n;
    rejections.clear();
    for (size_t i = 0; i < n && in; i++) {
        std::string key;
        in >> key;
        in >> rejections[key];
    }
    in >> n;
    wallSeconds.clear();
    for (size_t i = 0; i < n && in; i++) {
        std::string key;
        in >> key;
        in >> wallSeconds[key];
    }
    for (auto* map : {&attemptedByFrames, &acceptedByFrames}) {
        in >> n;
        map->clear();
        for (size_t i = 0; i < n && in; i++) {
            int key;
            in >> key;
            in >> (*map)[key];
        }
    }
    in >> n;
    dhKJ.assign(n, 0.0);
    for (double& dh : dhKJ)
        in >> dh;
}
