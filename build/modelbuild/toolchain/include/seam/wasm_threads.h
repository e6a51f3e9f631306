// TVM's parallel loops on WebAssembly threads: the "threads" web runtime includes this in place of TVM's
// serial TVMBackendParallelLaunch (web/emcc/wasm_runtime.cc runs every task on the calling thread).
//
// Every thread is an instance of the same module over one shared memory: the engine's thread (the one that
// loaded the model) and each helper (a Web Worker, webapp/client/lib/engine/cpu_thread.js, looping in
// seam_thread_run). A parallel loop is cut into a few tasks per thread, and each thread claims tasks until
// none is left: a thread the browser or the OS has descheduled costs the loop only the task it holds, not
// its whole share. (Measured on 2 cores, SmolLM2's decode with one fixed task per thread varied from 1.2x
// to 1.5x one thread's speed between runs.) Helpers poll the job word a while before they sleep on it,
// because a decode step launches over a hundred short loops. The engine's thread never sleeps (it may be a
// page's main thread, where wasm may not wait): it spins only for tasks that helpers hold.
#pragma once

#include <emscripten.h>
#include <emscripten/stack.h>
#include <tvm/runtime/c_backend_api.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>

extern "C" void __wasm_init_tls(void*);

namespace seam {

constexpr int kTasksPerThread = 4;
constexpr unsigned kLow = 0xffffu;  // a loop's words: (its generation << 16) | a task index, or its task count

struct ThreadPool {
  std::atomic<int> job{0};          // the loop's generation: helpers wake when it changes
  std::atomic<unsigned> loop{0};    // (the current loop's generation << 16) | its number of tasks
  std::atomic<unsigned> claims{0};  // (the current loop's generation << 16) | its next task (fetch_add takes it)
  std::atomic<int> done{0};         // tasks of the current loop finished
  std::atomic<int> failed{0};       // the first error code of the current loop
  std::atomic<int> helpers{0};      // helpers in use (0 until every helper is ready)
  std::atomic<int> ready{0};        // helpers waiting for their first loop
  std::atomic<int> launches{0};     // loops shared with helpers so far (the tests check that they were)
  FTVMParallelLambda lambda = nullptr;
  void* cdata = nullptr;
  TVMParallelGroupEnv env{nullptr, 1};
};
inline ThreadPool pool;  // in the shared memory: every instance sees the same one

// Measured (SmolLM2-135M q4f32_1's CPU build, 2 threads, Chromium, 2-core EPYC): a decode step shares 151
// loops; helpers that slept after 2^12 polls slept before every loop, after 2^15 before a third of them, and
// after 2^21 almost never. 2^18 polls are well under a millisecond.
constexpr int kSpins = 1 << 18;

inline void WaitWhile(std::atomic<int>& word, int value) {
  for (int i = 0; i < kSpins; ++i) {
    if (word.load(std::memory_order_acquire) != value) return;
  }
  while (word.load() == value) __builtin_wasm_memory_atomic_wait32(reinterpret_cast<int*>(&word), value, -1);
}

inline void WakeAll(std::atomic<int>& word) {
  __builtin_wasm_memory_atomic_notify(reinterpret_cast<int*>(&word), 0xffffffffu);
}

// The heap (dlmalloc without pthreads) is not thread-safe: workspace allocations inside parallel loops
// take this lock (the only allocations a kernel makes).
inline std::atomic<int> heap_lock{0};
struct HeapLock {
  HeapLock() {
    while (heap_lock.exchange(1, std::memory_order_acquire) != 0) {
    }
  }
  ~HeapLock() { heap_lock.store(0, std::memory_order_release); }
};

inline void Fail(int code) {
  int none = 0;
  pool.failed.compare_exchange_strong(none, code);
}

// Runs tasks of the current loop until none is left. A claim left over from a finished loop (a helper that
// woke late) is of another generation, or past that loop's last task: the launch changes `loop` before it
// touches the fields a task reads, and publishes them before it opens the claims.
inline void RunTasks() {
  for (;;) {
    unsigned claim = pool.claims.fetch_add(1);
    unsigned loop = pool.loop.load();
    if (claim >> 16 != loop >> 16 || (claim & kLow) >= (loop & kLow)) return;
    int code = pool.lambda(static_cast<int>(claim & kLow), &pool.env, pool.cdata);
    if (code != 0) Fail(code);
    pool.done.fetch_add(1);
  }
}

}  // namespace seam

extern "C" {

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  using seam::pool;
  int helpers = pool.helpers.load();
  if (helpers == 0) {
    TVMParallelGroupEnv env{nullptr, 1};
    return flambda(0, &env, cdata);
  }
  int tasks = (helpers + 1) * seam::kTasksPerThread;
  if (num_task > 0 && num_task < tasks) tasks = num_task;
  pool.launches.fetch_add(1, std::memory_order_relaxed);
  unsigned generation = ((pool.loop.load() >> 16) + 1) & seam::kLow;
  pool.loop.store(generation << 16 | static_cast<unsigned>(tasks));
  pool.lambda = flambda;
  pool.cdata = cdata;
  pool.env = TVMParallelGroupEnv{nullptr, tasks};
  pool.done.store(0);
  pool.failed.store(0);
  pool.claims.store(generation << 16);  // from here on, claims take this loop's tasks
  pool.job.store(static_cast<int>(generation));
  seam::WakeAll(pool.job);
  seam::RunTasks();
  while (pool.done.load() != tasks) {  // only tasks a helper holds are left
  }
  return pool.failed.load();
}

// TVM calls this only from kernels that synchronize their tasks, which Seam's kernels never do; with tasks
// claimed one after another by fewer threads, such a barrier would wait forever, so it fails instead.
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  if (penv->num_task > 1) __builtin_trap();
  return 0;
}

// On a helper, before anything else (after JS set its stack pointer to stack_high): its stack's limits and
// its own thread-local storage (TVM's workspace pool is thread_local).
EMSCRIPTEN_KEEPALIVE void seam_thread_setup(void* stack_high, void* stack_low, void* tls) {
  emscripten_stack_set_limits(stack_high, stack_low);
  __wasm_init_tls(tls);
}

EMSCRIPTEN_KEEPALIVE size_t seam_tls_size() { return __builtin_wasm_tls_size(); }
EMSCRIPTEN_KEEPALIVE size_t seam_tls_align() { return __builtin_wasm_tls_align(); }

// On the engine's thread: memory for a helper's stack and TLS (freed with the module's memory).
EMSCRIPTEN_KEEPALIVE void* seam_thread_memory(size_t bytes) { return aligned_alloc(16, (bytes + 15) & ~size_t{15}); }

// A helper's loop: it returns only if a task traps (then JS calls seam_thread_lost).
EMSCRIPTEN_KEEPALIVE void seam_thread_run() {
  using seam::pool;
  int seen = pool.job.load();
  pool.ready.fetch_add(1);
  for (;;) {
    seam::WaitWhile(pool.job, seen);
    seen = pool.job.load();
    seam::RunTasks();
  }
}

EMSCRIPTEN_KEEPALIVE int seam_threads_ready() { return seam::pool.ready.load(); }
EMSCRIPTEN_KEEPALIVE int seam_threads_launches() { return seam::pool.launches.load(); }

// On the engine's thread, once `count` helpers are ready: loops use them from now on.
EMSCRIPTEN_KEEPALIVE void seam_threads_use(int count) { seam::pool.helpers.store(count); }

// A helper's task trapped: later loops run on the engine's thread alone, and the current one ends with
// an error (its trapped task counted done) instead of waiting for it forever.
EMSCRIPTEN_KEEPALIVE void seam_thread_lost() {
  seam::pool.helpers.store(0);
  seam::heap_lock.store(0);  // in case it trapped holding the lock
  seam::Fail(-1);
  seam::pool.done.fetch_add(1);
}
}
