// Package crashtest proves keysetsync's delivery guarantees against the real binary.
//
// Its tests build cmd/keysetsync once per test, serve a playground API in-process with random
// updates running, and run the binary as a subprocess against Kafka (an in-process kfake
// cluster and the real broker of KAFKA_BROKERS), with fresh topics:
//
//   - TestCrashRecovery SIGKILLs `keysetsync once` at kill points told by its log lines (while
//     fetching a page, while producing a batch, after Kafka acknowledged a batch but before its
//     cursor is written, right after the cursor is written), the Nth occurrence with N varying,
//     and starts it again. On kfake the two points around a Kafka write are exact: the broker
//     itself kills the binary when the Nth data (or cursor) produce request of the run arrives,
//     then stores or drops that request, so the test knows how many messages the crash left
//     beyond the cursor and checks that number. After every kill it checks that the committed
//     cursor is never ahead of the data topic. A run that ends on its own before its kill
//     point (the sync caught up) is followed, once the API updated a record, by a run aimed at
//     the first occurrence, which always reaches it; a run that printed the line but finished
//     before the signal landed is run again, except at the last cursor write of a run, where
//     its exit leaves the kill point's state and counts. At the end, with the updates stopped,
//     one more `once` runs to completion; then `keysetsync verify` and an independent read of the topic
//     must find no record lost, and the duplicates must stay within the batches in flight at
//     each crash. Exactly-once (the default delivery), the topic is read as a read_committed
//     consumer does: after every kill it must hold exactly the messages the committed cursor
//     counts (once the commit markers of the data and cursor partitions are both written), the
//     acknowledged kill point on kfake is the nth EndTxn(commit), applied or dropped, and at
//     the end no record version may be in the topic twice, for keysetsync's reader and, on the
//     real broker, for two that are not ours: librdkafka (scripts/check_topic.py
//     --max-duplicates 0) and Kafka's console consumer with --isolation-level read_committed.
//   - TestZombieFencing runs two `run` instances of one pipeline, one getting every page 0.5 s
//     late, and kills and restarts them at random while the API changes: every stop that is
//     not a kill must be the fencing (exit 4, the error naming the pipeline) by a process that
//     initialised the transactional id later (a higher producer epoch), the cursor never goes
//     back nor ahead of the committed data, and after a final `once` nothing is lost, stale or
//     duplicated, for the same three readers.
//   - TestGracefulStop sends SIGTERM or SIGINT to `run` and `once` mid-pass or between passes
//     and requires exit status 0 for `run` with its "stopping on signal" log line, 130 (SIGINT)
//     or 143 (SIGTERM) for `once` with its "interrupted by" error, a cursor not ahead of the data
//     and, after a final `once`, no loss and no duplicate at all.
//
// Without KAFKA_BROKERS the real-broker variants are skipped, except under CI=true where they
// fail (see internal/kafkatest). TestCrashRecovery runs three modes against each target:
// exactly-once pipelined (--max-in-flight 4), exactly-once lookback (--lookback 1m) and
// at-least-once serial (--delivery at-least-once --max-in-flight 1, where a crash re-sends at
// most one batch). KEYSETSYNC_CRASH_KILLS=N sets the number of kills of the first mode, the
// others doing half as many (long mode); the default, 52, keeps the suite short.
//
// The tests need a Unix system: they send signals to the subprocess.
package crashtest
