/* Scheduling below the engine: the machine's topology (hwloc), placement of workers on cores grouped
 * by NUMA node, a pool of pinned worker threads, and the Chase–Lev work-stealing deque each of them owns.
 * A leaf module: it knows nothing of files, streams or the network; items are opaque `void *`. */
#ifndef QS_SCHED_SCHED_H
#define QS_SCHED_SCHED_H

#include <hwloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- topology ----------------------------------------------------------------------------------- */

/* Environment variable read by sched_topo_load(t, NULL, ...): when set and non-empty, it is a hwloc
 * synthetic description used instead of this machine's topology (for end-to-end tests). */
#define SCHED_TOPO_ENV "QSYNC_TOPOLOGY"

#define SCHED_MAX_WORKERS 4096 /* workers in one pool, and entries sched_topo_place fills */

struct sched_topo;

/* Loads a topology into *out. synthetic: a hwloc synthetic description (see
 * hwloc_topology_set_synthetic(), e.g. "pack:2 numa:1 core:2 pu:1"), or NULL for $QSYNC_TOPOLOGY if set
 * and non-empty, else this machine — only the cores this process may run on (its cgroup cpuset and its
 * CPU binding at the time of the call, e.g. from taskset), and the nodes it may use. A "core" is
 * a hwloc Core object, or a PU where the platform reports no cores; cores are numbered 0..ncores-1 in
 * hwloc's logical order, NUMA nodes 0..nnodes-1 likewise. Returns 0, or -EINVAL (bad description: err
 * says which), -ENOMEM, or another negative errno from hwloc with err filled. The caller frees *out with
 * sched_topo_free(). A loaded topology is read-only: any thread may query it concurrently. */
int sched_topo_load(struct sched_topo **out, const char *synthetic, struct qs_err *err);

/* Frees t and everything it owns (NULL is fine). No pool may still use it. */
void sched_topo_free(struct sched_topo *t);

/* Number of cores (>= 1) and of NUMA nodes (>= 1; a node may have no cores, e.g. memory-only). */
unsigned sched_topo_ncores(const struct sched_topo *t);
unsigned sched_topo_nnodes(const struct sched_topo *t);

/* The NUMA node index of core (the first node local to it), or -EINVAL if core >= ncores. */
int sched_topo_core_node(const struct sched_topo *t, unsigned core);

/* The PUs of core, usable with hwloc_set_cpubind() on sched_topo_hwloc(t); NULL if core >= ncores.
 * Owned by t. */
hwloc_const_cpuset_t sched_topo_core_cpuset(const struct sched_topo *t, unsigned core);

/* The nodeset of NUMA node `node` (for hwloc_alloc_membind(..., HWLOC_MEMBIND_BYNODESET)); NULL if
 * node >= nnodes. Owned by t. */
hwloc_const_nodeset_t sched_topo_node_nodeset(const struct sched_topo *t, unsigned node);

/* True when t describes the machine this process runs on, so binding means something. False for a
 * synthetic topology: hwloc then accepts binding calls and does nothing. */
bool sched_topo_is_thissystem(const struct sched_topo *t);

/* The underlying hwloc topology, for callers binding other things (io_uring SQPOLL threads, IRQs).
 * Owned by t; do not modify it. */
hwloc_topology_t sched_topo_hwloc(const struct sched_topo *t);

/* ---- placement ---------------------------------------------------------------------------------- */

struct sched_place {
	unsigned core; /* index into the topology's cores */
	unsigned node; /* that core's NUMA node */
};

/* Places nworkers workers (0: one per core) on t's cores and writes worker i's place to out[i]. The rule,
 * stable for a given topology and count:
 *  1. deal: list the cores in "spread" order — the first core of each node (nodes in index order, nodes
 *     without cores skipped), then the second core of each node, and so on — and give the j-th worker
 *     slot the core at position j mod ncores of that list (so with more workers than cores it wraps
 *     around, each core taking at most one more worker than any other);
 *  2. group: sort the slots by node, keeping deal order within a node, and number the workers in that
 *     order.
 * So workers are spread over nodes as evenly as the cores allow, workers of one node have consecutive
 * indices (worker -> core -> node), and within a node cores are used in order. With one node this is
 * worker i on core i mod ncores. Returns the number of workers placed, or -EINVAL (t NULL, out NULL, or
 * more than SCHED_MAX_WORKERS), -ENOSPC if cap is smaller than that number. */
int sched_topo_place(const struct sched_topo *t, unsigned nworkers, struct sched_place *out, unsigned cap);

/* ---- Chase–Lev work-stealing deque -------------------------------------------------------------- */

/* One owner thread pushes and pops at the bottom (LIFO); any number of thieves steal from the top
 * (FIFO). Lock-free, after Lê, Pop, Cohen, Zappa Nardelli, "Correct and Efficient Work-Stealing for
 * Weak Memory Models" (PPoPP 2013). Items are opaque and may be NULL. The array grows (never shrinks);
 * an outgrown array is kept until the deque is destroyed, since a thief may still be reading it.
 * A push happens-before the steal or pop that takes the same item, so what the owner wrote into an
 * item before pushing it is visible to whoever takes it. */
struct sched_deque;

#define SCHED_DEQUE_DEFAULT_CAP 1024

/* Creates an empty deque in *out whose array holds at least capacity items before it first grows
 * (0: SCHED_DEQUE_DEFAULT_CAP; rounded up to a power of two). Returns 0, -EINVAL or -ENOMEM. */
int sched_deque_create(struct sched_deque **out, size_t capacity);

/* Frees dq and every array it has had (NULL is fine). Items still inside are not touched. No other
 * thread may be using dq. */
void sched_deque_destroy(struct sched_deque *dq);

/* Owner only: pushes item at the bottom, growing the array when full. Returns 0, or -ENOMEM (the item
 * was not pushed; the deque is unchanged). */
int sched_deque_push(struct sched_deque *dq, void *item);

/* Owner only: takes the most recently pushed item into *item. Returns 0, or -ENOENT when empty
 * (including when a thief took the last item first). *item is only written on 0. */
int sched_deque_pop(struct sched_deque *dq, void **item);

/* Any thread: takes the oldest item into *item. Returns 0; -ENOENT when the deque was seen empty; or
 * -EAGAIN when another thief or the owner took that item first — the deque may still hold items, so
 * trying again is worthwhile. *item is only written on 0. */
int sched_deque_steal(struct sched_deque *dq, void **item);

/* Any thread: number of items, a snapshot that may be stale by the time it returns. */
size_t sched_deque_size(const struct sched_deque *dq);

/* Owner only (or while no thread uses dq): capacity of the current array. */
size_t sched_deque_capacity(const struct sched_deque *dq);

/* ---- worker pool -------------------------------------------------------------------------------- */

/* A pool of worker threads, one per placed core (sched_topo_place), each pinned to its core and owning
 * one deque. The thread that creates the pool is the engine's control-plane thread: the pool never
 * creates, pins or runs work on it. With nworkers = 0 there is one worker per core and the control
 * thread, left unpinned, shares the cores with them (it mostly waits on sockets); pass ncores - 1 to
 * leave it a core of its own.
 *
 * Lifecycle: sched_pool_create (workers placed, deques made, no thread yet) -> optionally seed deques
 * with sched_worker_push from the creating thread -> sched_pool_start -> each worker thread pins itself
 * and calls opts.run(w, opts.ctx) -> sched_pool_stop (from any thread, e.g. the one that finishes the
 * last job) -> sched_pool_join -> sched_pool_destroy.
 *
 * Idle workers park rather than spin: a pool-wide pending-work counter (items pushed and not yet taken)
 * and a sleeper count, both seq_cst, decide under a mutex whether a worker may sleep on the pool's
 * condition variable; every push that sees a sleeper signals one. A push can therefore never be missed
 * by a worker about to sleep. The price is one shared atomic add per push and per take, which is fine
 * for jobs as coarse as files or byte ranges. */
struct sched_pool;
struct sched_worker;

#define SCHED_POOL_NO_PIN 0x1u /* do not bind worker threads to their cores */

/* A thief scans remote nodes only on every SCHED_STEAL_LOCAL_TRIES-th consecutive steal attempt that
 * found its own node empty: a node's own idle workers get the first chance at its work. */
#define SCHED_STEAL_LOCAL_TRIES 2

struct sched_pool_opts {
	unsigned nworkers;     /* 0: one per core; at most SCHED_MAX_WORKERS */
	unsigned flags;        /* SCHED_POOL_* */
	size_t deque_capacity; /* initial capacity of each deque; 0: SCHED_DEQUE_DEFAULT_CAP */
	/* Runs on each worker thread after pinning; the thread ends when it returns. It must return soon
	 * after sched_pool_stop() (sched_worker_next() then returns -ESHUTDOWN). Required. */
	void (*run)(struct sched_worker *w, void *ctx);
	void *ctx; /* passed to run */
};

/* Creates a pool on topo (which must outlive the pool) with opts (copied). No thread is started.
 * Returns 0, or -EINVAL (bad opts: err says which) or -ENOMEM with err filled. */
int sched_pool_create(struct sched_pool **out, const struct sched_topo *topo,
                      const struct sched_pool_opts *opts, struct qs_err *err);

/* Starts one thread per worker. Pinning happens on the worker thread before run(); its failure is not
 * fatal (see sched_worker_pin_status). Returns 0; -EINVAL if already started; or a negative errno from
 * pthread_create with err filled, in which case the threads already started have been told to stop and
 * joined before returning. */
int sched_pool_start(struct sched_pool *p, struct qs_err *err);

/* Asks every worker to stop: wakes the parked ones, and from now on sched_worker_next() returns
 * -ESHUTDOWN and sched_pool_stopping() true. Any thread, any number of times. Items left in deques stay
 * there (after sched_pool_join the caller may drain them with sched_worker_pop). */
void sched_pool_stop(struct sched_pool *p);

/* True once sched_pool_stop() has been called. Any thread. */
bool sched_pool_stopping(const struct sched_pool *p);

/* Waits until every worker thread has returned from run(). Does not stop them by itself. Safe to call
 * again, and before start (returns at once). Not from a worker thread. */
void sched_pool_join(struct sched_pool *p);

/* Stops and joins the workers if they run, then frees the pool, its workers and their deques (NULL is
 * fine). Items still in deques are not touched. Not from a worker thread. */
void sched_pool_destroy(struct sched_pool *p);

unsigned sched_pool_nworkers(const struct sched_pool *p);

/* Items pushed onto the pool's deques and not yet taken (a snapshot; while workers run it may count an
 * item being pushed or taken at that instant). Any thread. */
uint64_t sched_pool_pending(const struct sched_pool *p);

/* Worker i (0 <= i < nworkers), or NULL. Owned by the pool. */
struct sched_worker *sched_pool_worker(struct sched_pool *p, unsigned i);

/* What a worker is: its index in the pool, its core and NUMA node (as in sched_topo_place), its pool.
 * Any thread. */
unsigned sched_worker_index(const struct sched_worker *w);
unsigned sched_worker_core(const struct sched_worker *w);
unsigned sched_worker_node(const struct sched_worker *w);
struct sched_pool *sched_worker_pool(const struct sched_worker *w);

#define SCHED_PIN_NOT_YET 2 /* the thread has not tried yet */
#define SCHED_PIN_SKIPPED 1 /* SCHED_POOL_NO_PIN, or a topology that is not this machine */

/* How pinning went: 0 pinned to its core's cpuset, SCHED_PIN_SKIPPED, SCHED_PIN_NOT_YET, or the
 * negative errno hwloc_set_cpubind failed with (the worker then runs unpinned). Any thread; final
 * once run() has been called. */
int sched_worker_pin_status(const struct sched_worker *w);

/* The calls below (push, pop, steal, next) belong to the worker's own thread. They may also be called
 * by one other thread at a time while no worker thread runs — before sched_pool_start (to seed work)
 * or after sched_pool_join (to drain it). */

/* Pushes item onto w's deque and wakes a parked worker if there is one. Returns 0 or -ENOMEM. */
int sched_worker_push(struct sched_worker *w, void *item);

/* Takes the item w pushed last from its own deque. Returns 0 or -ENOENT. */
int sched_worker_pop(struct sched_worker *w, void **item);

/* One steal attempt for w. Victims on w's own node come first, starting after w itself and rotating by
 * one each call, so thieves neither start at the same victim nor keep hitting the same one. When the
 * own node has nothing, the remote nodes are scanned — nodes in index order after w's node, within a
 * node from a victim rotating with w's index — but only on every SCHED_STEAL_LOCAL_TRIES-th such
 * attempt in a row. A success is counted in w's steals_local or steals_remote and in the victim's
 * stolen. Returns 0 with *item; -EAGAIN when nothing was taken but something may be there (a race was
 * lost, or the remote scan is not yet due): call again; -ENOENT when every other deque was seen empty. */
int sched_worker_steal(struct sched_worker *w, void **item);

/* The next item for w: its own deque first, then steals, then parking until work is pushed anywhere
 * or the pool stops. Returns 0 with *item, or -ESHUTDOWN once sched_pool_stop() has been called (checked
 * before each item, so remaining items are left in place). */
int sched_worker_next(struct sched_worker *w, void **item);

/* Allocates size bytes (page-granular, page-aligned: meant for rings and I/O buffers, not small objects)
 * whose pages come from w's NUMA node: hwloc_alloc() then hwloc_set_area_membind(HWLOC_MEMBIND_BIND),
 * which on Linux is MPOL_PREFERRED — the node's memory first, another node's when it is full. This is
 * what hwloc_alloc_membind() does, without its silently returning unbound memory when binding fails.
 * Where binding is not possible (no NUMA support, a policy the kernel refuses, or a topology that is not
 * this machine) the memory is returned unbound and counted in w's alloc_unbound. Returns NULL with errno
 * EINVAL for size 0 or ENOMEM. Any thread. Free with sched_worker_free. */
void *sched_worker_alloc(struct sched_worker *w, size_t size);

/* Frees what sched_worker_alloc(w, size) returned; size must be the same. NULL is fine. Any thread. */
void sched_worker_free(struct sched_worker *w, void *ptr, size_t size);

/* Counters of one worker, for the engine's --json statistics. Each is an atomic written by one thread
 * at a time (stolen and alloc_unbound: by any thread, with atomic adds), so a snapshot taken while the
 * pool runs is a little stale but each value is whole; after sched_pool_join it is exact. */
struct sched_worker_stats {
	uint64_t pushes;        /* items pushed onto its deque */
	uint64_t pops;          /* items it took back from its own deque */
	uint64_t steals_local;  /* items it stole from workers on its own NUMA node */
	uint64_t steals_remote; /* items it stole from workers on other nodes */
	uint64_t stolen;        /* items other workers stole from it */
	uint64_t steal_races;   /* steal attempts on a victim that lost the race for an item */
	uint64_t parks;         /* times it slept waiting for work */
	uint64_t alloc_unbound; /* sched_worker_alloc calls that could not bind to its node */
};

/* Fills *out with w's counters. Any thread. */
void sched_worker_stats(const struct sched_worker *w, struct sched_worker_stats *out);

#endif
