// C++ tests of the ForecastIntegrator on one platform: clock, statistics, refusals, XML round trip, checkpoints.
// Usage: TestForecastIntegrator PLATFORM FORECASTER.pt [PLUGIN_DIRECTORY]
#include "ForecastIntegrator.h"
#include "openmm/Context.h"
#include "openmm/HarmonicBondForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/serialization/XmlSerializer.h"
#include <cmath>
#include <iostream>
#include <memory>
#include <sstream>

using namespace ForecastPlugin;
using namespace OpenMM;

#define CHECK(condition)                                                                                    \
    if (!(condition)) {                                                                                     \
        std::stringstream message;                                                                          \
        message << "check failed at " << __FILE__ << ":" << __LINE__ << ": " << #condition;                 \
        throw std::runtime_error(message.str());                                                            \
    }

static System* triatomic(int particles) {
    System* system = new System();
    HarmonicBondForce* bonds = new HarmonicBondForce();
    for (int i = 0; i < particles; i++) {
        system->addParticle(39.9);
        if (i > 0)
            bonds->addBond(i - 1, i, 0.4, 1000.0);
    }
    system->addForce(bonds);
    return system;
}

static std::vector<Vec3> start() {
    return {Vec3(0, 0, 0), Vec3(0.4, 0, 0), Vec3(0.8, 0.05, 0)};
}

static void testClockAndStatistics(Platform& platform, const std::string& model) {
    std::unique_ptr<System> system(triatomic(3));
    ForecastIntegrator integrator(model, 300.0, 1.0, 0.001);
    integrator.setRandomNumberSeed(5);
    Context context(*system, integrator, platform);
    context.setPositions(start());
    context.setVelocitiesToTemperature(300.0, 3);
    integrator.step(1001);
    State state = context.getState(State::Positions);
    CHECK(context.getStepCount() == 1001);
    CHECK(std::abs(state.getTime() - 1.001) < 1e-9);
    ForecastStatistics stats = integrator.getStatistics();
    long long rejected = 0;
    for (const auto& item : stats.rejections)
        rejected += item.second;
    CHECK(stats.jumpsAttempted > 0);
    CHECK(stats.jumpsAttempted == stats.jumpsAccepted + rejected);
    CHECK(std::abs(stats.jumpedPs + stats.integratedPs + stats.keptPs + stats.pendingPs - 1.001) < 1e-9);
    for (const Vec3& position : state.getPositions())
        CHECK(std::isfinite(position[0]) && std::isfinite(position[1]) && std::isfinite(position[2]));
}

static void testWrongAtomCount(Platform& platform, const std::string& model) {
    std::unique_ptr<System> system(triatomic(4));
    ForecastIntegrator integrator(model, 300.0, 1.0, 0.001);
    try {
        Context context(*system, integrator, platform);
    }
    catch (const OpenMMException& error) {
        CHECK(std::string(error.what()).find("3 atoms, but the System has 4 particles") != std::string::npos);
        return;
    }
    throw std::runtime_error("a forecaster for 3 atoms was accepted for 4 particles");
}

static void testSerialization(const std::string& model) {
    ForecastIntegrator integrator(model, 310.0, 2.5, 0.0005);
    integrator.setConstraintTolerance(1e-6);
    integrator.setIntegrationForceGroups(3);
    integrator.setRandomNumberSeed(17);
    integrator.setSegmentSteps(7);
    integrator.setJumpsPerCycle(3);
    integrator.setMaxFrames(2);
    integrator.setInitialFrames(1);
    integrator.setAdaptSpan(0);
    integrator.setGrowAfter(6);
    integrator.setEnergyTolerance(0.5);
    integrator.setDriftTolerance(8.0);
    integrator.setTemperatureSigmas(-1.0);
    integrator.setReequilibrationSteps(50);
    integrator.setAcceptance("ghmc");
    integrator.setAllowInexactMetropolis(true);
    integrator.setVelocityMemory(0.25);
    integrator.setJump(0.05);
    integrator.setSurrogateStepSize(0.0025);
    integrator.setSurrogatePlatform("CPU");
    integrator.setBondStretch(1.25);
    integrator.setThermostatJumps(false);
    integrator.setThermostatted(1);
    std::stringstream buffer;
    XmlSerializer::serialize<Integrator>(&integrator, "Integrator", buffer);
    std::unique_ptr<Integrator> copy(XmlSerializer::deserialize<Integrator>(buffer));
    ForecastIntegrator& other = dynamic_cast<ForecastIntegrator&>(*copy);
    CHECK(other.getForecasterFile() == model);
    CHECK(other.getTemperature() == 310.0 && other.getFriction() == 2.5 && other.getStepSize() == 0.0005);
    CHECK(other.getConstraintTolerance() == 1e-6 && other.getIntegrationForceGroups() == 3 && other.getRandomNumberSeed() == 17);
    CHECK(other.getSegmentSteps() == 7 && other.getJumpsPerCycle() == 3 && other.getMaxFrames() == 2 && other.getInitialFrames() == 1);
    CHECK(other.getAdaptSpan() == 0 && other.getGrowAfter() == 6 && other.getEnergyTolerance() == 0.5 && other.getDriftTolerance() == 8.0);
    CHECK(other.getTemperatureSigmas() == -1.0 && other.getReequilibrationSteps() == 50 && other.getAcceptance() == "ghmc");
    CHECK(other.getAllowInexactMetropolis() && other.getVelocityMemory() == 0.25 && other.getJump() == 0.05);
    CHECK(other.getSurrogateStepSize() == 0.0025 && other.getSurrogatePlatform() == "CPU");
    CHECK(other.getBondStretch() == 1.25 && !other.getThermostatJumps() && other.getThermostatted() == 1);
}

/** Tampered XML: each attribute of the wrong type or out of range is refused, naming it. */
static void testTamperedXml(const std::string& model) {
    ForecastIntegrator integrator(model, 300.0, 1.0, 0.001);
    std::stringstream buffer;
    XmlSerializer::serialize<Integrator>(&integrator, "Integrator", buffer);
    const std::string xml = buffer.str();
    const std::vector<std::pair<std::string, std::string>> cases{
        {"maxFrames=\"0\"", "maxFrames=\"lots\""},
        {"jumpsPerCycle=\"4\"", "jumpsPerCycle=\"2.5\""},
        {"randomSeed=\"0\"", "randomSeed=\"99999999999999999999999\""},
        {"temperature=\"300\"", "temperature=\"abc\""},
        {"acceptance=\"tolerance\"", "acceptance=\"sometimes\""},
        {"thermostatJumps=\"1\"", "thermostatJumps=\"yes\""},
        {"bondStretch=\"1.5\"", "bondStretch=\"0.5\""}};
    for (const auto& item : cases) {
        size_t at = xml.find(item.first);
        CHECK(at != std::string::npos);
        std::string tampered = xml;
        tampered.replace(at, item.first.size(), item.second);
        std::string name = item.first.substr(0, item.first.find('='));
        bool refused = false;
        try {
            std::stringstream in(tampered);
            delete XmlSerializer::deserialize<Integrator>(in);
        }
        catch (const OpenMMException& error) {
            refused = std::string(error.what()).find(name) != std::string::npos;
        }
        CHECK(refused);
    }
}

static void testCheckpoint(Platform& platform, const std::string& model) {
    std::unique_ptr<System> system(triatomic(3));
    ForecastIntegrator integrator(model, 300.0, 5.0, 0.001);
    integrator.setRandomNumberSeed(11);
    Context context(*system, integrator, platform);
    context.setPositions(start());
    context.setVelocitiesToTemperature(300.0, 4);
    integrator.step(300);
    std::stringstream checkpoint;
    context.createCheckpoint(checkpoint);
    integrator.step(300);
    State first = context.getState(State::Positions | State::Velocities);
    ForecastStatistics firstStats = integrator.getStatistics();

    ForecastIntegrator fresh(model, 300.0, 5.0, 0.001);
    fresh.setRandomNumberSeed(11);
    Context other(*system, fresh, platform);
    other.loadCheckpoint(checkpoint);
    fresh.step(300);
    State second = other.getState(State::Positions | State::Velocities);
    ForecastStatistics secondStats = fresh.getStatistics();
    CHECK(other.getStepCount() == 600);
    ForecastIntegrator warmer(model, 350.0, 5.0, 0.001);  // the checkpoint carries temperature and friction
    Context third(*system, warmer, platform);
    bool refused = false;
    try {
        checkpoint.seekg(0);
        third.loadCheckpoint(checkpoint);
    }
    catch (const OpenMMException& error) {
        refused = std::string(error.what()).find("350") != std::string::npos;
    }
    CHECK(refused);
    CHECK(firstStats.jumpsAttempted == secondStats.jumpsAttempted && firstStats.jumpsAccepted == secondStats.jumpsAccepted);
    CHECK(firstStats.dhKJ == secondStats.dhKJ);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            CHECK(first.getPositions()[i][k] == second.getPositions()[i][k]);
            CHECK(first.getVelocities()[i][k] == second.getVelocities()[i][k]);
        }
}

int main(int argc, char* argv[]) {
    if (argc < 3) {
        std::cerr << "usage: TestForecastIntegrator PLATFORM FORECASTER.pt [PLUGIN_DIRECTORY]" << std::endl;
        return 2;
    }
    try {
        if (argc > 3)
            Platform::loadPluginsFromDirectory(argv[3]);
        Platform& platform = Platform::getPlatformByName(argv[1]);
        std::string model = argv[2];
        testClockAndStatistics(platform, model);
        testWrongAtomCount(platform, model);
        testSerialization(model);
        testTamperedXml(model);
        testCheckpoint(platform, model);
    }
    catch (const std::exception& error) {
        std::cerr << "FAIL (" << argv[1] << "): " << error.what() << std::endl;
        return 1;
    }
    std::cout << "Done" << std::endl;
    return 0;
}
