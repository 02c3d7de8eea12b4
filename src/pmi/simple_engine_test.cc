// SimpleEngine behaviours, from transcripts of what PMI-1 clients send.
//
// The transcripts follow what MPICH 4.0.2 was seen to send (pmi.md A4): a
// fixture feeds request lines as bytes and records every reply and event.
#include "pmi/simple_engine.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/error.h"

namespace jiffy::pmi {
namespace {

constexpr char kKvs[] = "kvs_42_0";

JobInfo job(int size, std::vector<int> appnum = {}) {
  if (appnum.empty()) appnum.assign(static_cast<std::size_t>(size), 0);
  return JobInfo{size, kKvs, std::move(appnum), size, {}};
}

class SimpleEngineTest : public ::testing::Test {
 protected:
  void start(JobInfo info) {
    replies_.assign(static_cast<std::size_t>(info.size), {});
    SimpleEngine::Callbacks cb;
    cb.send = [this](int rank, std::string_view line) {
      replies_[static_cast<std::size_t>(rank)].emplace_back(line);
    };
    cb.abort = [this](int rank, int code) { aborts_.emplace_back(rank, code); };
    cb.finalized = [this](int rank) { finalized_.push_back(rank); };
    cb.protocol_error = [this](int rank, const std::string& why) {
      errors_.emplace_back(rank, why);
      if (disconnect_on_error_) reentrant_disconnects_.push_back(engine_->on_disconnect(rank));
    };
    engine_ = std::make_unique<SimpleEngine>(std::move(info), std::move(cb));
  }

  // Feeds raw bytes, as read from the rank's fd.
  void feed(int rank, std::string_view bytes) { engine_->on_data(rank, bytes); }

  // Sends one request line and returns every reply it produced for that rank
  // ("" when none).
  std::string ask(int rank, const std::string& line) {
    feed(rank, line + "\n");
    return take(rank);
  }

  // The replies queued for rank since the last take, concatenated.
  std::string take(int rank) {
    std::string all;
    for (const std::string& s : replies_[static_cast<std::size_t>(rank)]) all += s;
    replies_[static_cast<std::size_t>(rank)].clear();
    return all;
  }

  void init(int rank) {
    ASSERT_EQ(ask(rank, "cmd=init pmi_version=1 pmi_subversion=1"),
              "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n");
  }

  std::string put(int rank, const std::string& key, const std::string& value) {
    return ask(rank, "cmd=put kvsname=" + std::string(kKvs) + " key=" + key + " value=" + value);
  }

  std::string get(int rank, const std::string& key) {
    return ask(rank, "cmd=get kvsname=" + std::string(kKvs) + " key=" + key);
  }

  // Asserts rank was reported exactly once as a protocol error, and nothing
  // was sent to it.
  void expect_protocol_error(int rank) {
    ASSERT_EQ(errors_.size(), 1u);
    EXPECT_EQ(errors_[0].first, rank);
    EXPECT_FALSE(errors_[0].second.empty());
    EXPECT_EQ(take(rank), "");
  }

  std::unique_ptr<SimpleEngine> engine_;
  std::vector<std::deque<std::string>> replies_;
  std::vector<std::pair<int, int>> aborts_;
  std::vector<int> finalized_;
  std::vector<std::pair<int, std::string>> errors_;
  bool disconnect_on_error_ = false;
  std::vector<bool> reentrant_disconnects_;
};

TEST_F(SimpleEngineTest, Mpich402TwoRankTranscript) {
  start(job(2));
  const std::string kvs = kKvs;
  for (int r = 0; r < 2; ++r) {
    init(r);
    EXPECT_EQ(ask(r, "cmd=get_maxes"),
              "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024\n");
    EXPECT_EQ(ask(r, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=0\n");
    EXPECT_EQ(ask(r, "cmd=get_my_kvsname"), "cmd=my_kvsname rc=0 kvsname=" + kvs + "\n");
    EXPECT_TRUE(engine_->initialized(r));
  }
  // (2) node map, then the first barrier.
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(get(r, "PMI_process_mapping"), "cmd=get_result rc=0 value=(vector,(0,1,2))\n");
  }
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
  // (3) rank 0 broadcasts its shm name.
  EXPECT_EQ(put(0, "-bcast-1-0", "2f6d706963685f73686d"), "cmd=put_result rc=0\n");
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(get(1, "-bcast-1-0"), "cmd=get_result rc=0 value=2f6d706963685f73686d\n");
  // (4) allgather of shm names.
  EXPECT_EQ(put(0, "-allgather-shm-1-0", "a0"), "cmd=put_result rc=0\n");
  EXPECT_EQ(put(1, "-allgather-shm-1-1", "b1"), "cmd=put_result rc=0\n");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(1), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(get(0, "-allgather-shm-1-1"), "cmd=get_result rc=0 value=b1\n");
  EXPECT_EQ(get(1, "-allgather-shm-1-0"), "cmd=get_result rc=0 value=a0\n");
  // MPI_Finalize: barrier, finalize, EOF.
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(ask(r, "cmd=finalize"), "cmd=finalize_ack rc=0\n");
    EXPECT_TRUE(engine_->finalized(r));
    EXPECT_FALSE(engine_->on_disconnect(r));
  }
  EXPECT_EQ(finalized_, (std::vector<int>{0, 1}));
  EXPECT_TRUE(errors_.empty());
  EXPECT_TRUE(aborts_.empty());
}

TEST_F(SimpleEngineTest, FallbackNodemapWithoutProcessMappingWorks) {
  // The hostname exchange MPICH falls back to (pmi.md A4), keys with brackets.
  start(job(2));
  init(0);
  init(1);
  EXPECT_EQ(put(0, "hostname[0]", "node1"), "cmd=put_result rc=0\n");
  EXPECT_EQ(put(1, "hostname[1]", "node1"), "cmd=put_result rc=0\n");
  ask(0, "cmd=barrier_in");
  ask(1, "cmd=barrier_in");
  take(0);
  EXPECT_EQ(get(0, "hostname[1]"), "cmd=get_result rc=0 value=node1\n");
}

TEST_F(SimpleEngineTest, UniverseSizeComesFromJobInfo) {
  start(JobInfo{2, kKvs, {0, 0}, -1, {}});
  init(0);
  EXPECT_EQ(ask(0, "cmd=get_universe_size"), "cmd=universe_size rc=0 size=-1\n");
}

TEST_F(SimpleEngineTest, ProcessMappingCoversTheWholeJob) {
  start(job(12));
  init(5);
  EXPECT_EQ(get(5, "PMI_process_mapping"), "cmd=get_result rc=0 value=(vector,(0,1,12))\n");
}

TEST_F(SimpleEngineTest, MpmdRanksGetTheirAppnum) {
  start(job(4, {0, 0, 1, 2}));
  for (int r = 0; r < 4; ++r) init(r);
  EXPECT_EQ(ask(0, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=0\n");
  EXPECT_EQ(ask(1, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=0\n");
  EXPECT_EQ(ask(2, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=1\n");
  EXPECT_EQ(ask(3, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=2\n");
}

TEST_F(SimpleEngineTest, SecondInitIsAnsweredLikeTheFirst) {
  start(job(1));
  init(0);
  init(0);
  EXPECT_TRUE(engine_->initialized(0));
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, Pmi10IsAnsweredWith11) {
  start(job(1));
  EXPECT_EQ(ask(0, "cmd=init pmi_version=1 pmi_subversion=0"),
            "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n");
}

TEST_F(SimpleEngineTest, Pmi2InitIsRefusedAndReported) {
  start(job(2));
  EXPECT_EQ(ask(0, "cmd=init pmi_version=2 pmi_subversion=0"),
            "cmd=response_to_init rc=-1 pmi_version=1 pmi_subversion=1 msg=unsupported_version\n");
  ASSERT_EQ(errors_.size(), 1u);
  EXPECT_EQ(errors_[0].first, 0);
  EXPECT_NE(errors_[0].second.find("PMI-2"), std::string::npos) << errors_[0].second;
  EXPECT_FALSE(engine_->initialized(0));
  EXPECT_FALSE(engine_->on_disconnect(0));  // already reported
}

TEST_F(SimpleEngineTest, OtherInitVersionsAreRefused) {
  for (const char* line :
       {"cmd=init pmi_version=1 pmi_subversion=2", "cmd=init pmi_version=0 pmi_subversion=9",
        "cmd=init pmi_version=1", "cmd=init", "cmd=init pmi_version=one pmi_subversion=1"}) {
    errors_.clear();
    start(job(1));
    EXPECT_EQ(ask(0, line),
              "cmd=response_to_init rc=-1 pmi_version=1 pmi_subversion=1 msg=unsupported_version\n")
        << line;
    EXPECT_EQ(errors_.size(), 1u) << line;
  }
}

TEST_F(SimpleEngineTest, TokenWithoutEqualsIsProtocolError) {
  start(job(2));
  init(0);
  EXPECT_EQ(ask(0, "cmd=put kvsname=kvs_42_0 key=a value=has space"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, EmptyLineIsProtocolError) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, ""), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, BlankLineIsProtocolError) {
  start(job(1));
  EXPECT_EQ(ask(0, "   \t "), "");
  expect_protocol_error(0);
  EXPECT_TRUE(engine_->ever_connected(0));
}

TEST_F(SimpleEngineTest, LineWithoutCmdIsProtocolError) {
  start(job(1));
  EXPECT_EQ(ask(0, "pmi_version=1 pmi_subversion=1"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, TokenWithEmptyKeyIsProtocolError) {
  start(job(1));
  EXPECT_EQ(ask(0, "cmd=init =1"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, UnknownCommandIsProtocolError) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "cmd=getbyidx kvsname=kvs_42_0 idx=0"), "");
  expect_protocol_error(0);
  EXPECT_NE(errors_[0].second.find("getbyidx"), std::string::npos);
}

TEST_F(SimpleEngineTest, UnknownMcmdIsProtocolError) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "mcmd=fork"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, LinesAfterProtocolErrorAreIgnored) {
  start(job(1));
  feed(0, "cmd=bogus\ncmd=init pmi_version=1 pmi_subversion=1\ncmd=bogus\n");
  expect_protocol_error(0);
  ask(0, "cmd=init pmi_version=1 pmi_subversion=1");
  EXPECT_EQ(errors_.size(), 1u);
  EXPECT_FALSE(engine_->initialized(0));
}

TEST_F(SimpleEngineTest, RequestBeforeInitIsProtocolError) {
  start(job(1));
  EXPECT_EQ(ask(0, "cmd=get_maxes"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, RequestWhileWaitingInBarrierIsProtocolError) {
  start(job(2));
  init(0);
  ask(0, "cmd=barrier_in");
  EXPECT_EQ(ask(0, "cmd=get_maxes"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, RequestAfterFinalizeIsProtocolError) {
  start(job(1));
  init(0);
  ask(0, "cmd=finalize");
  EXPECT_EQ(ask(0, "cmd=get_maxes"), "");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, TokensInAnyOrderWithExtraWhitespace) {
  start(job(1));
  init(0);
  put(0, "k", "v");
  EXPECT_EQ(ask(0, "  key=k \t kvsname=kvs_42_0   cmd=get  \r"), "cmd=get_result rc=0 value=v\n");
}

TEST_F(SimpleEngineTest, KeyOfMaximumLengthIsAccepted) {
  start(job(1));
  init(0);
  std::string key(64, 'k');
  EXPECT_EQ(put(0, key, "v"), "cmd=put_result rc=0\n");
  EXPECT_EQ(get(0, key), "cmd=get_result rc=0 value=v\n");
}

TEST_F(SimpleEngineTest, OversizedKeyIsRefused) {
  start(job(1));
  init(0);
  std::string key(65, 'k');
  EXPECT_EQ(put(0, key, "v"), "cmd=put_result rc=5 msg=key_too_long\n");
  EXPECT_EQ(get(0, key), "cmd=get_result rc=5 msg=key_too_long\n");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, ValueOfMaximumLengthIsAccepted) {
  start(job(1));
  init(0);
  std::string value(1024, 'f');
  EXPECT_EQ(put(0, "k", value), "cmd=put_result rc=0\n");
  EXPECT_EQ(get(0, "k"), "cmd=get_result rc=0 value=" + value + "\n");
}

TEST_F(SimpleEngineTest, OversizedValueIsRefused) {
  start(job(1));
  init(0);
  EXPECT_EQ(put(0, "k", std::string(1025, 'f')), "cmd=put_result rc=7 msg=value_too_long\n");
  EXPECT_EQ(get(0, "k"), "cmd=get_result rc=-1 msg=key_k_not_found value=unknown\n");
}

TEST_F(SimpleEngineTest, WrongKvsnameIsRefused) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "cmd=put kvsname=other key=k value=v"),
            "cmd=put_result rc=14 msg=unknown_kvsname\n");
  EXPECT_EQ(ask(0, "cmd=get kvsname=other key=k"), "cmd=get_result rc=14 msg=unknown_kvsname\n");
}

TEST_F(SimpleEngineTest, MissingPutArgumentsAreRefused) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "cmd=put key=k value=v"), "cmd=put_result rc=3 msg=missing_kvsname\n");
  EXPECT_EQ(ask(0, "cmd=put kvsname=kvs_42_0 value=v"), "cmd=put_result rc=3 msg=missing_key\n");
  EXPECT_EQ(ask(0, "cmd=put kvsname=kvs_42_0 key=k"), "cmd=put_result rc=3 msg=missing_value\n");
  EXPECT_EQ(ask(0, "cmd=put kvsname=kvs_42_0 key= value=v"), "cmd=put_result rc=4 msg=empty_key\n");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, EmptyValueIsStored) {
  start(job(1));
  init(0);
  EXPECT_EQ(put(0, "k", ""), "cmd=put_result rc=0\n");
  EXPECT_EQ(get(0, "k"), "cmd=get_result rc=0 value=\n");
}

TEST_F(SimpleEngineTest, ServerKeysCannotBePut) {
  start(job(2));
  init(0);
  EXPECT_EQ(put(0, "PMI_process_mapping", "x"), "cmd=put_result rc=4 msg=reserved_key\n");
  EXPECT_EQ(get(0, "PMI_process_mapping"), "cmd=get_result rc=0 value=(vector,(0,1,2))\n");
}

TEST_F(SimpleEngineTest, GetBeforeAnyPutMisses) {
  start(job(2));
  init(1);
  EXPECT_EQ(get(1, "-bcast-1-0"),
            "cmd=get_result rc=-1 msg=key_-bcast-1-0_not_found value=unknown\n");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, DeadProcessesIsEmpty) {
  start(job(2));
  init(0);
  EXPECT_EQ(get(0, "PMI_dead_processes"), "cmd=get_result rc=0 value=\n");
}

TEST_F(SimpleEngineTest, RepeatedPutOverwrites) {
  start(job(1));
  init(0);
  put(0, "k", "1");
  EXPECT_EQ(put(0, "k", "2"), "cmd=put_result rc=0\n");
  EXPECT_EQ(get(0, "k"), "cmd=get_result rc=0 value=2\n");
}

TEST_F(SimpleEngineTest, ValuesMayContainEqualsAndKeysSlashes) {
  // A payload over (vallen-2)/2 bytes is split by MPICH into segments.
  start(job(2));
  init(0);
  init(1);
  EXPECT_EQ(put(0, "-allgather-1-0", "segments=3"), "cmd=put_result rc=0\n");
  EXPECT_EQ(put(0, "-allgather-1-0-seg-1/3", "00ff"), "cmd=put_result rc=0\n");
  EXPECT_EQ(put(0, "-allgather-1-0-seg-3/3", "a=b=c"), "cmd=put_result rc=0\n");
  EXPECT_EQ(get(1, "-allgather-1-0"), "cmd=get_result rc=0 value=segments=3\n");
  EXPECT_EQ(get(1, "-allgather-1-0-seg-1/3"), "cmd=get_result rc=0 value=00ff\n");
  EXPECT_EQ(get(1, "-allgather-1-0-seg-3/3"), "cmd=get_result rc=0 value=a=b=c\n");
}

TEST_F(SimpleEngineTest, LineSplitAcrossReadsIsReassembled) {
  start(job(1));
  const std::string line = "cmd=init pmi_version=1 pmi_subversion=1\n";
  for (char c : line) feed(0, std::string_view(&c, 1));
  EXPECT_EQ(take(0), "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n");
  feed(0, "cmd=get_");
  EXPECT_EQ(take(0), "");
  feed(0, "maxes\ncmd=get_app");
  EXPECT_EQ(take(0), "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024\n");
  feed(0, "num\n");
  EXPECT_EQ(take(0), "cmd=appnum rc=0 appnum=0\n");
}

TEST_F(SimpleEngineTest, SeveralLinesInOneReadAreAnsweredInOrder) {
  start(job(1));
  feed(0, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=get_maxes\ncmd=get_appnum\n");
  EXPECT_EQ(take(0),
            "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n"
            "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024\n"
            "cmd=appnum rc=0 appnum=0\n");
}

TEST_F(SimpleEngineTest, PartialLineIsNotASpokenLine) {
  start(job(1));
  feed(0, "cmd=init");
  EXPECT_FALSE(engine_->ever_connected(0));
  EXPECT_FALSE(engine_->on_disconnect(0));
}

TEST_F(SimpleEngineTest, LineOfMaximumLengthIsParsed) {
  start(job(1));
  init(0);
  std::string line = "cmd=get_maxes pad=";
  line += std::string(SimpleEngine::kMaxLineBytes - line.size(), 'x');
  EXPECT_EQ(ask(0, line), "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024\n");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, OverlongLineIsProtocolErrorWithoutWaitingForNewline) {
  start(job(1));
  init(0);
  std::string chunk(1000, 'x');
  for (int i = 0; i < 4; ++i) feed(0, chunk);
  EXPECT_TRUE(errors_.empty());
  feed(0, std::string(97, 'x'));  // 4097 bytes, still no '\n'
  expect_protocol_error(0);
  EXPECT_TRUE(engine_->ever_connected(0));
  feed(0, std::string(100000, 'x') + "\n");  // ignored, not buffered
  EXPECT_EQ(errors_.size(), 1u);
}

TEST_F(SimpleEngineTest, OverlongLineInOneReadIsProtocolError) {
  start(job(1));
  init(0);
  feed(0, "cmd=get_maxes pad=" + std::string(5000, 'x') + "\ncmd=get_maxes\n");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, AbortReportsExitcodeWithoutReply) {
  start(job(2));
  init(0);
  EXPECT_EQ(ask(0, "cmd=abort exitcode=7"), "");
  EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{0, 7}}));
  EXPECT_TRUE(errors_.empty());
  // The rank is being killed: its later lines and EOF are no further news.
  EXPECT_EQ(ask(0, "cmd=get_maxes"), "");
  EXPECT_FALSE(engine_->on_disconnect(0));
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, AbortExitcodeMayBeNegative) {
  start(job(1));
  init(0);
  ask(0, "cmd=abort exitcode=-1");
  EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{0, -1}}));
}

TEST_F(SimpleEngineTest, AbortAcceptsOlderExitCodeSpelling) {
  start(job(1));
  init(0);
  ask(0, "cmd=abort exit_code=3 error_msg=boom");
  EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{0, 3}}));
}

TEST_F(SimpleEngineTest, AbortWithoutUsableExitcodeReportsOne) {
  for (const char* line : {"cmd=abort", "cmd=abort exitcode=", "cmd=abort exitcode=7x",
                           "cmd=abort exitcode=99999999999"}) {
    aborts_.clear();
    start(job(1));
    init(0);
    ask(0, line);
    EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{0, 1}})) << line;
  }
}

TEST_F(SimpleEngineTest, AbortBeforeInitIsAccepted) {
  start(job(1));
  ask(0, "cmd=abort exitcode=2");
  EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{0, 2}}));
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, AbortWhileOthersWaitInBarrierNeverReleasesIt) {
  start(job(3));
  for (int r = 0; r < 3; ++r) init(r);
  ask(0, "cmd=barrier_in");
  ask(1, "cmd=barrier_in");
  ask(2, "cmd=abort exitcode=5");
  EXPECT_EQ(aborts_, (std::vector<std::pair<int, int>>{{2, 5}}));
  EXPECT_EQ(take(0), "");
  EXPECT_EQ(take(1), "");
}

TEST_F(SimpleEngineTest, RankDisappearingMidBarrierIsFailureAndBarrierStaysShut) {
  start(job(3));
  for (int r = 0; r < 3; ++r) init(r);
  ask(0, "cmd=barrier_in");
  ask(2, "cmd=barrier_in");
  EXPECT_TRUE(engine_->on_disconnect(2));
  EXPECT_FALSE(engine_->on_disconnect(2));  // reported once
  // The last live rank enters: the barrier is incomplete, nobody is released.
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "");
  EXPECT_EQ(take(0), "");
  // More lines during teardown do no harm.
  feed(2, "cmd=barrier_in\n");
  EXPECT_EQ(take(2), "");
  EXPECT_TRUE(engine_->on_disconnect(0));
  EXPECT_TRUE(engine_->on_disconnect(1));
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SimpleEngineTest, RankDisappearingOutsideBarrierIsFailure) {
  start(job(2));
  init(0);
  init(1);
  EXPECT_TRUE(engine_->on_disconnect(1));
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(get(0, "PMI_process_mapping"), "");  // in the barrier: lock-step violation
  EXPECT_EQ(errors_.size(), 1u);
}

TEST_F(SimpleEngineTest, SilentRankExitingIsNotFailure) {
  // A non-MPI program in the job never speaks PMI.
  start(job(2));
  EXPECT_FALSE(engine_->on_disconnect(1));
  EXPECT_FALSE(engine_->ever_connected(1));
  EXPECT_FALSE(engine_->initialized(1));
}

TEST_F(SimpleEngineTest, BarrierCompletesWhenLastOtherRankLeavesCleanly) {
  start(job(3));
  init(0);
  init(1);
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "");
  // Rank 2 never spoke PMI and will never enter.
  EXPECT_FALSE(engine_->on_disconnect(2));
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(1), "cmd=barrier_out rc=0\n");
}

TEST_F(SimpleEngineTest, SingleRankBarrierReleasesAtOnce) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
}

TEST_F(SimpleEngineTest, BarrierWaitsForRanksThatHaveNotConnectedYet) {
  start(job(2));
  init(0);
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  init(1);
  EXPECT_EQ(take(0), "");
  EXPECT_EQ(ask(1, "cmd=barrier_in"), "cmd=barrier_out rc=0\n");
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
}

TEST_F(SimpleEngineTest, FinalizedRankDoesNotHoldBarrier) {
  start(job(2));
  init(0);
  init(1);
  EXPECT_EQ(ask(0, "cmd=barrier_in"), "");
  EXPECT_EQ(ask(1, "cmd=finalize"), "cmd=finalize_ack rc=0\n");
  EXPECT_EQ(take(0), "cmd=barrier_out rc=0\n");
  EXPECT_FALSE(engine_->on_disconnect(1));
}

TEST(SimpleEngineCallbackOrder, FinalizeIsReportedAfterItsReply) {
  std::vector<std::string> events;
  SimpleEngine::Callbacks cb;
  cb.send = [&](int, std::string_view line) { events.emplace_back(line); };
  cb.abort = [](int, int) {};
  cb.finalized = [&](int rank) { events.push_back("finalized " + std::to_string(rank)); };
  cb.protocol_error = [](int, const std::string&) {};
  SimpleEngine engine(job(1), cb);
  engine.on_data(0, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=finalize\n");
  EXPECT_EQ(events,
            (std::vector<std::string>{"cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n",
                                      "cmd=finalize_ack rc=0\n", "finalized 0"}));
  EXPECT_TRUE(engine.initialized(0));
  EXPECT_TRUE(engine.finalized(0));
}

TEST_F(SimpleEngineTest, CallbackMayDisconnectTheRankItReports) {
  start(job(2));
  disconnect_on_error_ = true;
  init(0);
  feed(0, "cmd=nonsense\ncmd=get_maxes\n");
  ASSERT_EQ(errors_.size(), 1u);
  EXPECT_EQ(reentrant_disconnects_, (std::vector<bool>{false}));
  EXPECT_EQ(take(0), "");
}

TEST_F(SimpleEngineTest, PublishLookupAndUnpublishAreRefusedCleanly) {
  start(job(1));
  init(0);
  EXPECT_EQ(ask(0, "cmd=publish_name service=s port=p"),
            "cmd=publish_result rc=-1 msg=not_supported\n");
  EXPECT_EQ(ask(0, "cmd=lookup_name service=s"), "cmd=lookup_result rc=-1 msg=not_supported\n");
  EXPECT_EQ(ask(0, "cmd=unpublish_name service=s"),
            "cmd=unpublish_result rc=-1 msg=not_supported\n");
  EXPECT_TRUE(errors_.empty());
}

// One block as PMI_Spawn_multiple writes it: a single write of many lines.
std::string spawn_block(int totspawns, int spawnssofar) {
  return "mcmd=spawn\nnprocs=2\nexecname=./worker\ntotspawns=" + std::to_string(totspawns) +
         "\nspawnssofar=" + std::to_string(spawnssofar) +
         "\narg1=--mode=fast\narg2=two words\nargcnt=2\npreput_num=1\n"
         "preput_key_0=PARENT_ROOT_PORT_NAME\npreput_val_0=tag#0$description#x$\n"
         "info_num=0\nendcmd\n";
}

TEST_F(SimpleEngineTest, SpawnBlockIsRefusedWithOneReply) {
  start(job(1));
  init(0);
  feed(0, spawn_block(1, 1));
  EXPECT_EQ(take(0), "cmd=spawn_result rc=-1 msg=spawn_not_supported\n");
  EXPECT_TRUE(errors_.empty());
  // The conversation goes on normally afterwards.
  EXPECT_EQ(ask(0, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=0\n");
}

TEST_F(SimpleEngineTest, MultiAppSpawnIsAnsweredOnceAfterTheLastBlock) {
  start(job(1));
  init(0);
  feed(0, spawn_block(3, 1));
  feed(0, spawn_block(3, 2));
  EXPECT_EQ(take(0), "");
  feed(0, spawn_block(3, 3));
  EXPECT_EQ(take(0), "cmd=spawn_result rc=-1 msg=spawn_not_supported\n");
}

TEST_F(SimpleEngineTest, SpawnBlockWithoutCountsIsAnsweredAtEachEndcmd) {
  start(job(1));
  init(0);
  feed(0, "mcmd=spawn\nnprocs=1\nexecname=a\nendcmd\nmcmd=spawn\nendcmd\n");
  EXPECT_EQ(take(0),
            "cmd=spawn_result rc=-1 msg=spawn_not_supported\n"
            "cmd=spawn_result rc=-1 msg=spawn_not_supported\n");
}

TEST_F(SimpleEngineTest, SpawnBlockSplitAcrossReadsIsReassembled) {
  start(job(1));
  init(0);
  std::string block = spawn_block(1, 1);
  for (std::size_t i = 0; i < block.size(); i += 7) feed(0, block.substr(i, 7));
  EXPECT_EQ(take(0), "cmd=spawn_result rc=-1 msg=spawn_not_supported\n");
}

TEST_F(SimpleEngineTest, MalformedSpawnItemIsProtocolError) {
  start(job(1));
  init(0);
  feed(0, "mcmd=spawn\nnprocs=1\ngarbage\nendcmd\n");
  expect_protocol_error(0);
}

TEST_F(SimpleEngineTest, SpawnBeforeInitIsProtocolError) {
  start(job(1));
  feed(0, spawn_block(1, 1));
  expect_protocol_error(0);
}

// With a spawn callback: the blocks become one request, answered later.
class SpawnTest : public SimpleEngineTest {
 protected:
  void start_spawning(JobInfo info) {
    replies_.assign(static_cast<std::size_t>(info.size), {});
    SimpleEngine::Callbacks cb;
    cb.send = [this](int rank, std::string_view line) {
      replies_[static_cast<std::size_t>(rank)].emplace_back(line);
    };
    cb.abort = [](int, int) {};
    cb.finalized = [](int) {};
    cb.protocol_error = [this](int rank, const std::string& why) { errors_.emplace_back(rank, why); };
    cb.spawn = [this](int rank, SpawnRequest r) { requests_.emplace_back(rank, std::move(r)); };
    engine_ = std::make_unique<SimpleEngine>(std::move(info), std::move(cb));
  }
  std::vector<std::pair<int, SpawnRequest>> requests_;
};

TEST_F(SpawnTest, OneBlockIsOneRequestAnsweredWhenTheCallerSaysSo) {
  start_spawning(job(1));
  init(0);
  feed(0, spawn_block(1, 1));
  EXPECT_EQ(take(0), "");
  ASSERT_EQ(requests_.size(), 1u);
  const SpawnRequest& r = requests_[0].second;
  ASSERT_EQ(r.apps.size(), 1u);
  EXPECT_EQ(r.apps[0].nprocs, 2);
  EXPECT_EQ(r.apps[0].execname, "./worker");
  EXPECT_EQ(r.apps[0].args, (std::vector<std::string>{"--mode=fast", "two words"}));
  EXPECT_EQ(r.preput, (KeyValues{{"PARENT_ROOT_PORT_NAME", "tag#0$description#x$"}}));
  EXPECT_EQ(r.total_procs(), 2);
  // Lock-step: nothing else until the answer.
  engine_->spawn_done(0, true);
  EXPECT_EQ(take(0), "cmd=spawn_result rc=0\n");
  EXPECT_EQ(ask(0, "cmd=get_appnum"), "cmd=appnum rc=0 appnum=0\n");
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SpawnTest, MultipleBlocksAreOneRequestWithInfo) {
  start_spawning(job(1));
  init(0);
  feed(0, "mcmd=spawn\nnprocs=1\nexecname=a\ntotspawns=2\nspawnssofar=1\nargcnt=0\npreput_num=0\n"
          "info_num=1\ninfo_key_0=wdir\ninfo_val_0=/tmp/x y\nendcmd\n");
  EXPECT_TRUE(requests_.empty());
  feed(0, "mcmd=spawn\nnprocs=3\nexecname=b\ntotspawns=2\nspawnssofar=2\nargcnt=1\narg1= spaced \n"
          "preput_num=0\ninfo_num=0\nendcmd\n");
  ASSERT_EQ(requests_.size(), 1u);
  const SpawnRequest& r = requests_[0].second;
  ASSERT_EQ(r.apps.size(), 2u);
  EXPECT_EQ(r.apps[0].info, (KeyValues{{"wdir", "/tmp/x y"}}));
  EXPECT_EQ(r.apps[1].args, (std::vector<std::string>{" spaced "}));
  EXPECT_EQ(r.total_procs(), 4);
  engine_->spawn_done(0, false, "no such program");
  EXPECT_EQ(take(0), "cmd=spawn_result rc=-1 msg=no_such_program\n");
}

TEST_F(SpawnTest, IncompleteBlocksAreRefusedWithoutTheCallback) {
  start_spawning(job(1));
  init(0);
  EXPECT_EQ(ask(0, "mcmd=spawn\nnprocs=0\nexecname=a\nendcmd"), "cmd=spawn_result rc=-1 msg=bad_nprocs\n");
  EXPECT_EQ(ask(0, "mcmd=spawn\nnprocs=1\nendcmd"), "cmd=spawn_result rc=-1 msg=missing_execname\n");
  EXPECT_EQ(ask(0, "mcmd=spawn\nnprocs=1\nexecname=a\nargcnt=2\narg1=x\nendcmd"),
            "cmd=spawn_result rc=-1 msg=missing_arg2\n");
  EXPECT_EQ(ask(0, "mcmd=spawn\nnprocs=1\nexecname=a\npreput_num=1\npreput_key_0=k\nendcmd"),
            "cmd=spawn_result rc=-1 msg=missing_preput_0\n");
  EXPECT_EQ(ask(0, "mcmd=spawn\nnprocs=70000\nexecname=a\nendcmd"), "cmd=spawn_result rc=-1 msg=bad_nprocs\n");
  // A bad first block fails the whole multi-app request, answered once.
  feed(0, "mcmd=spawn\nnprocs=x\nexecname=a\ntotspawns=2\nspawnssofar=1\nendcmd\n");
  EXPECT_EQ(take(0), "");
  feed(0, "mcmd=spawn\nnprocs=1\nexecname=b\ntotspawns=2\nspawnssofar=2\nendcmd\n");
  EXPECT_EQ(take(0), "cmd=spawn_result rc=-1 msg=bad_nprocs\n");
  EXPECT_TRUE(requests_.empty());
  EXPECT_TRUE(errors_.empty());
}

TEST_F(SpawnTest, RequestWhileWaitingForTheSpawnIsProtocolError) {
  start_spawning(job(1));
  init(0);
  feed(0, spawn_block(1, 1));
  feed(0, "cmd=get_appnum\n");
  expect_protocol_error(0);
  engine_->spawn_done(0, true);  // the rank is gone: nothing is sent
  EXPECT_EQ(take(0), "");
}

TEST_F(SpawnTest, AnswerAfterDisconnectIsDropped) {
  start_spawning(job(1));
  init(0);
  feed(0, spawn_block(1, 1));
  engine_->on_disconnect(0);
  engine_->spawn_done(0, true);
  EXPECT_EQ(take(0), "");
}

TEST_F(SimpleEngineTest, PreputPairsAreInTheKvsFromTheStart) {
  JobInfo info = job(2);
  info.preput = {{"PARENT_ROOT_PORT_NAME", "port#1"}};
  start(std::move(info));
  init(1);
  EXPECT_EQ(get(1, "PARENT_ROOT_PORT_NAME"), "cmd=get_result rc=0 value=port#1\n");
  SimpleEngine::Callbacks cb;
  cb.send = [](int, std::string_view) {};
  cb.abort = [](int, int) {};
  cb.finalized = [](int) {};
  cb.protocol_error = [](int, const std::string&) {};
  JobInfo bad = job(1);
  bad.preput = {{"PMI_process_mapping", "x"}};
  EXPECT_THROW(SimpleEngine(bad, cb), Error);
  bad.preput = {{"", "x"}};
  EXPECT_THROW(SimpleEngine(bad, cb), Error);
}

TEST_F(SimpleEngineTest, BadJobInfoIsRejected) {
  SimpleEngine::Callbacks cb;
  cb.send = [](int, std::string_view) {};
  cb.abort = [](int, int) {};
  cb.finalized = [](int) {};
  cb.protocol_error = [](int, const std::string&) {};
  EXPECT_THROW(SimpleEngine(JobInfo{0, kKvs, {}, 0, {}}, cb), Error);
  EXPECT_THROW(SimpleEngine(JobInfo{2, kKvs, {0}, 2, {}}, cb), Error);
  EXPECT_THROW(SimpleEngine(JobInfo{1, "", {0}, 1, {}}, cb), Error);
  EXPECT_THROW(SimpleEngine(JobInfo{1, "a b", {0}, 1, {}}, cb), Error);
  EXPECT_THROW(SimpleEngine(JobInfo{1, std::string(257, 'k'), {0}, 1, {}}, cb), Error);
  EXPECT_NO_THROW(SimpleEngine(JobInfo{1, std::string(256, 'k'), {0}, 1, {}}, cb));
  cb.finalized = nullptr;
  EXPECT_THROW(SimpleEngine(JobInfo{1, kKvs, {0}, 1, {}}, cb), Error);
}

TEST_F(SimpleEngineTest, RankOutOfRangeThrows) {
  start(job(2));
  EXPECT_THROW(feed(2, "cmd=init\n"), Error);
  EXPECT_THROW(feed(-1, "cmd=init\n"), Error);
  EXPECT_THROW(engine_->on_disconnect(2), Error);
  EXPECT_THROW(engine_->initialized(5), Error);
}

}  // namespace
}  // namespace jiffy::pmi
