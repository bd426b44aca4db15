"""The inference thread's queue: shutdown under a backlog is bounded, and what it cannot finish is counted."""

import threading
import time

from stream_ecg.batcher import MicroBatcher


def test_stop_under_a_backlog_drops_and_counts_what_it_cannot_finish_and_ends_the_thread():
    finished, drops = [], []
    gate = threading.Event()

    def slow_infer(jobs):  # a model that takes 50 ms a window
        gate.wait(5)
        time.sleep(0.05 * len(jobs))
        finished.extend(jobs)
        return []

    b = MicroBatcher(model=None, on_done=lambda done: None, max_batch=1, max_wait_ms=0, max_queue=64,
                     on_drop=lambda reason, n: drops.append((reason, n)))
    b._infer = slow_infer
    b.start()
    for k in range(40):
        assert b.submit(k) == 0
    gate.set()
    t0 = time.monotonic()
    b.stop(timeout=0.3)
    took = time.monotonic() - t0
    assert not b._thread.is_alive() and took < 1.0  # the timeout, then one batch in flight
    assert [r for r, _ in drops] == ["shutdown"] and 0 < len(finished) < 40
    assert len(finished) + drops[0][1] == 40  # every window either inferred or counted
    assert b.idle()


def test_stop_finishes_a_queue_it_can_clear_in_time():
    finished, drops = [], []
    b = MicroBatcher(model=None, on_done=lambda done: None, max_batch=4, max_wait_ms=0, max_queue=64,
                     on_drop=lambda reason, n: drops.append((reason, n)))
    b._infer = lambda jobs: (finished.extend(jobs), [])[1]
    b.start()
    for k in range(20):
        b.submit(k)
    b.stop(timeout=5)
    assert len(finished) == 20 and drops == [] and not b._thread.is_alive()


def test_a_worker_stopped_under_a_backlog_counts_the_windows_it_drops(tiny_model_dir):
    from stream_ecg.live_eval import drop_counts
    from stream_ecg.worker import Worker

    w = Worker(tiny_model_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", metrics_port=None, max_batch=1, max_queue=64,
               stop_timeout_s=0.3)
    w.batcher._infer = lambda jobs: (time.sleep(0.05), [])[1]  # a model too slow for its queue
    thread = w.start()
    for k in range(40):
        w.batcher.submit(k)
    t0 = time.monotonic()
    w.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t0 < 3.0
    assert 0 < drop_counts(w).get("shutdown", 0) < 40
