/* The worker pool: one pinned thread per placed core, each owning a Chase–Lev deque, stealing from its
 * own NUMA node before remote ones, and parking on a condition variable when there is nothing to do.
 * The engine hands work in as opaque items; what an item means is none of this file's business. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"

#define CACHE_LINE 64

/* Each counter has one writer at a time (the owner; `stolen` and `alloc_unbound` use atomic adds), so
 * readers on other threads see whole values without a lock. */
struct worker_counters {
	_Atomic uint64_t pushes, pops, steals_local, steals_remote, steal_races, parks, alloc_unbound;
	/* the thieves': a line of its own, so stealing from a worker does not bounce its counters */
	alignas(CACHE_LINE) _Atomic uint64_t stolen;
};

struct sched_worker {
	alignas(CACHE_LINE) struct sched_deque *dq;
	struct sched_pool *pool;
	unsigned index, core, node;
	unsigned rank;         /* position among the workers of its node */
	unsigned rot;          /* steal rotation; owner only */
	unsigned local_misses; /* consecutive steal attempts that found its node empty; owner only */
	_Atomic int pin_status;
	pthread_t thread;
	struct worker_counters c;
};

enum pool_state { POOL_CREATED, POOL_RUNNING, POOL_JOINED };

struct sched_pool {
	const struct sched_topo *topo;
	struct sched_pool_opts opts;
	unsigned nworkers, nnodes;
	struct sched_worker *workers;
	unsigned *node_first, *node_count; /* per node: its workers are node_first .. + node_count - 1 */
	enum pool_state state;             /* the controlling thread's only */
	unsigned nstarted;
	pthread_mutex_t lock; /* with cond: parking */
	pthread_cond_t cond;
	/* Items pushed and not yet taken, counted before the item enters a deque: when it reads 0, no
	 * deque holds an item. */
	alignas(CACHE_LINE) _Atomic int64_t pending;
	alignas(CACHE_LINE) _Atomic int sleepers; /* workers inside park(), changed under lock */
	_Atomic bool stopping;
};

/* A counter with a single writer: a plain load and store, no read-modify-write needed. */
static void bump(_Atomic uint64_t *c)
{
	/* relaxed: a statistic, ordering nothing */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

int sched_pool_create(struct sched_pool **out, const struct sched_topo *topo,
                      const struct sched_pool_opts *opts, struct qs_err *err)
{
	struct sched_place *place = NULL;
	struct sched_pool *p = NULL;
	int rc;

	if (!out)
		return qs_err_set(err, -EINVAL, "sched_pool_create: no output");
	*out = NULL;
	if (!topo || !opts || !opts->run)
		return qs_err_set(err, -EINVAL,
		                  "sched_pool_create: a topology and a run function are required");
	if (opts->nworkers > SCHED_MAX_WORKERS)
		return qs_err_set(err, -EINVAL, "%u workers asked for, at most %d", opts->nworkers,
		                  SCHED_MAX_WORKERS);
	unsigned n = opts->nworkers ? opts->nworkers : sched_topo_ncores(topo);

	p = calloc(1, sizeof(*p));
	place = calloc(n, sizeof(*place));
	if (!p || !place) {
		free(p);
		free(place);
		return qs_err_set(err, -ENOMEM, "out of memory creating a pool of %u workers", n);
	}
	p->topo = topo;
	p->opts = *opts;
	p->nnodes = sched_topo_nnodes(topo);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	atomic_init(&p->pending, 0);
	atomic_init(&p->sleepers, 0);
	atomic_init(&p->stopping, false);

	rc = sched_topo_place(topo, opts->nworkers, place, n);
	if (rc < 0) {
		rc = qs_err_set(err, rc, "cannot place %u workers: %s", n, strerror(-rc));
		goto out;
	}
	p->node_first = calloc(p->nnodes, sizeof(*p->node_first));
	p->node_count = calloc(p->nnodes, sizeof(*p->node_count));
	p->workers = aligned_alloc(CACHE_LINE, n * sizeof(*p->workers));
	if (!p->node_first || !p->node_count || !p->workers) {
		rc = qs_err_set(err, -ENOMEM, "out of memory creating a pool of %u workers", n);
		goto out;
	}
	memset(p->workers, 0, n * sizeof(*p->workers));
	for (unsigned i = 0; i < n; i++) {
		struct sched_worker *w = &p->workers[i];
		if (p->node_count[place[i].node]++ == 0)
			p->node_first[place[i].node] = i; /* placement keeps a node's workers together */
		w->pool = p;
		w->index = i;
		w->core = place[i].core;
		w->node = place[i].node;
		w->rank = i - p->node_first[w->node];
		atomic_init(&w->pin_status, SCHED_PIN_NOT_YET);
		rc = sched_deque_create(&w->dq, opts->deque_capacity);
		if (rc < 0) {
			rc =
			    qs_err_set(err, rc, "cannot create the deque of worker %u: %s", i, strerror(-rc));
			goto out;
		}
		p->nworkers = i + 1; /* what destroy must free */
	}
	free(place);
	*out = p;
	return 0;
out:
	free(place);
	sched_pool_destroy(p);
	return rc;
}

static void *worker_main(void *arg)
{
	struct sched_worker *w = arg;
	struct sched_pool *p = w->pool;
	char name[16];
	int st = SCHED_PIN_SKIPPED;

	snprintf(name, sizeof(name), "qs-w%u", w->index);
	pthread_setname_np(pthread_self(), name);
	/* A synthetic topology's cpusets are not this machine's: hwloc would accept the call and do
	 * nothing, so say "skipped" rather than "pinned". */
	if (!(p->opts.flags & SCHED_POOL_NO_PIN) && sched_topo_is_thissystem(p->topo)) {
		st = 0;
		if (hwloc_set_cpubind(sched_topo_hwloc(p->topo), sched_topo_core_cpuset(p->topo, w->core),
		                      HWLOC_CPUBIND_THREAD) < 0)
			st = errno ? -errno : -EINVAL;
	}
	/* relaxed: a report for other threads; run() below is on this thread */
	atomic_store_explicit(&w->pin_status, st, memory_order_relaxed);
	p->opts.run(w, p->opts.ctx);
	return NULL;
}

int sched_pool_start(struct sched_pool *p, struct qs_err *err)
{
	if (p->state != POOL_CREATED)
		return qs_err_set(err, -EINVAL, "pool already started");
	p->state = POOL_RUNNING;
	for (unsigned i = 0; i < p->nworkers; i++) {
		int rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
		if (rc != 0) {
			sched_pool_stop(p);
			sched_pool_join(p);
			return qs_err_set(err, -rc, "cannot start worker thread %u of %u: %s", i, p->nworkers,
			                  strerror(rc));
		}
		p->nstarted++;
	}
	return 0;
}

void sched_pool_stop(struct sched_pool *p)
{
	/* seq_cst (release at least): a worker that sees stopping sees what preceded the stop; the lock
	 * below then makes sure no worker is between its check and its wait */
	atomic_store_explicit(&p->stopping, true, memory_order_seq_cst);
	pthread_mutex_lock(&p->lock);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

bool sched_pool_stopping(const struct sched_pool *p)
{
	/* acquire: pairs with the store in sched_pool_stop */
	return atomic_load_explicit(&p->stopping, memory_order_acquire);
}

void sched_pool_join(struct sched_pool *p)
{
	if (p->state != POOL_RUNNING)
		return;
	for (unsigned i = 0; i < p->nstarted; i++)
		pthread_join(p->workers[i].thread, NULL);
	p->state = POOL_JOINED;
}

void sched_pool_destroy(struct sched_pool *p)
{
	if (!p)
		return;
	if (p->state == POOL_RUNNING) {
		sched_pool_stop(p);
		sched_pool_join(p);
	}
	for (unsigned i = 0; p->workers && i < p->nworkers; i++)
		sched_deque_destroy(p->workers[i].dq);
	free(p->workers);
	free(p->node_first);
	free(p->node_count);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

unsigned sched_pool_nworkers(const struct sched_pool *p)
{
	return p->nworkers;
}

uint64_t sched_pool_pending(const struct sched_pool *p)
{
	/* relaxed: a snapshot. Never negative: an item is counted before it is pushed and uncounted
	 * after it is taken. */
	return (uint64_t)atomic_load_explicit(&p->pending, memory_order_relaxed);
}

struct sched_worker *sched_pool_worker(struct sched_pool *p, unsigned i)
{
	return i < p->nworkers ? &p->workers[i] : NULL;
}

unsigned sched_worker_index(const struct sched_worker *w)
{
	return w->index;
}

unsigned sched_worker_core(const struct sched_worker *w)
{
	return w->core;
}

unsigned sched_worker_node(const struct sched_worker *w)
{
	return w->node;
}

struct sched_pool *sched_worker_pool(const struct sched_worker *w)
{
	return w->pool;
}

int sched_worker_pin_status(const struct sched_worker *w)
{
	/* relaxed: a report; see worker_main */
	return atomic_load_explicit(&w->pin_status, memory_order_relaxed);
}

static void wake_one(struct sched_pool *p)
{
	/* Taking the lock means a worker that counted itself a sleeper is either waiting already or will
	 * see pending > 0 before it would wait. */
	pthread_mutex_lock(&p->lock);
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

int sched_worker_push(struct sched_worker *w, void *item)
{
	struct sched_pool *p = w->pool;

	/* seq_cst: counted before the item is visible in the deque (so pending == 0 means no item
	 * anywhere), and ordered before the load of sleepers below against park()'s add to sleepers then
	 * load of pending — one of the two sides sees the other, so no wakeup is lost */
	atomic_fetch_add_explicit(&p->pending, 1, memory_order_seq_cst);
	int rc = sched_deque_push(w->dq, item);
	if (rc < 0) {
		/* relaxed: takes back our own count; a parker that saw it just looks again */
		atomic_fetch_sub_explicit(&p->pending, 1, memory_order_relaxed);
		return rc;
	}
	bump(&w->c.pushes);
	/* seq_cst: see the add above */
	if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0)
		wake_one(p);
	return 0;
}

/* Counts an item taken from a deque out of pending. */
static void taken(struct sched_pool *p)
{
	/* relaxed: the take happened after the item's seq_cst add (push -> take), so this never makes
	 * pending miss an item still in a deque; it only ends a parker's recheck loop */
	atomic_fetch_sub_explicit(&p->pending, 1, memory_order_relaxed);
}

int sched_worker_pop(struct sched_worker *w, void **item)
{
	int rc = sched_deque_pop(w->dq, item);
	if (rc == 0) {
		taken(w->pool);
		bump(&w->c.pops);
	}
	return rc;
}

/* One steal from victim v for thief w, with the bookkeeping. */
static int steal_from(struct sched_worker *w, struct sched_worker *v, bool local, void **item, bool *raced)
{
	int rc = sched_deque_steal(v->dq, item);
	if (rc == 0) {
		taken(w->pool);
		bump(local ? &w->c.steals_local : &w->c.steals_remote);
		/* relaxed: a statistic; several thieves add to it */
		atomic_fetch_add_explicit(&v->c.stolen, 1, memory_order_relaxed);
	} else if (rc == -EAGAIN) {
		*raced = true;
		bump(&w->c.steal_races);
	}
	return rc;
}

int sched_worker_steal(struct sched_worker *w, void **item)
{
	struct sched_pool *p = w->pool;
	unsigned first = p->node_first[w->node], count = p->node_count[w->node];
	unsigned rot = w->rot++;
	bool raced = false;

	/* Own node: the count - 1 others, starting after w and moving one further each call. */
	for (unsigned j = 0; j + 1 < count; j++) {
		unsigned r = (w->rank + 1 + (rot + j) % (count - 1)) % count;
		if (steal_from(w, &p->workers[first + r], true, item, &raced) == 0) {
			w->local_misses = 0;
			return 0;
		}
	}
	if (raced)
		return -EAGAIN; /* there is local work; stay local */
	if (count == p->nworkers)
		return -ENOENT; /* no remote workers */
	if (++w->local_misses < SCHED_STEAL_LOCAL_TRIES)
		return -EAGAIN;
	w->local_misses = 0;

	for (unsigned d = 1; d < p->nnodes; d++) {
		unsigned nd = (w->node + d) % p->nnodes;
		unsigned c = p->node_count[nd];
		for (unsigned j = 0; j < c; j++) {
			unsigned r = (w->index + rot + j) % c;
			if (steal_from(w, &p->workers[p->node_first[nd] + r], false, item, &raced) == 0)
				return 0;
		}
	}
	return raced ? -EAGAIN : -ENOENT;
}

/* Sleeps until pending work or a stop, unless either is already there. */
static void park(struct sched_worker *w)
{
	struct sched_pool *p = w->pool;
	bool slept = false;

	pthread_mutex_lock(&p->lock);
	/* seq_cst: announced before pending is read below; pairs with push's add to pending then load of
	 * sleepers */
	atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
	/* seq_cst load of pending: see above; stopping is read under the lock sched_pool_stop takes */
	while (atomic_load_explicit(&p->pending, memory_order_seq_cst) <= 0 &&
	       !atomic_load_explicit(&p->stopping, memory_order_acquire)) {
		if (!slept) {
			slept = true;
			bump(&w->c.parks); /* counted on the way in, so "asleep" can be seen while it lasts */
		}
		pthread_cond_wait(&p->cond, &p->lock);
	}
	/* relaxed: under the lock; an extra wakeup from a stale count costs only a look */
	atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
	pthread_mutex_unlock(&p->lock);
	/* Work is counted but was not found: it is between its count and its deque (or a taker is
	 * between the two), which the other thread finishes sooner if it gets the CPU. */
	if (!slept)
		sched_yield();
}

int sched_worker_next(struct sched_worker *w, void **item)
{
	for (;;) {
		if (sched_pool_stopping(w->pool))
			return -ESHUTDOWN;
		if (sched_worker_pop(w, item) == 0)
			return 0;
		int rc = sched_worker_steal(w, item);
		if (rc == 0)
			return 0;
		if (rc == -ENOENT)
			park(w);
		/* -EAGAIN: look again at once; someone else just made progress */
	}
}

void *sched_worker_alloc(struct sched_worker *w, size_t size)
{
	const struct sched_topo *t = w->pool->topo;
	hwloc_topology_t hw = sched_topo_hwloc(t);

	if (size == 0) {
		errno = EINVAL;
		return NULL;
	}
	void *ptr = hwloc_alloc(hw, size);
	if (!ptr) {
		errno = ENOMEM;
		return NULL;
	}
	/* Untouched pages: the policy decides where each lands on first touch. */
	if (!sched_topo_is_thissystem(t) ||
	    hwloc_set_area_membind(hw, ptr, size, sched_topo_node_nodeset(t, w->node), HWLOC_MEMBIND_BIND,
	                           HWLOC_MEMBIND_BYNODESET) < 0)
		/* relaxed: a statistic; any thread may allocate */
		atomic_fetch_add_explicit(&w->c.alloc_unbound, 1, memory_order_relaxed);
	return ptr;
}

void sched_worker_free(struct sched_worker *w, void *ptr, size_t size)
{
	if (ptr)
		hwloc_free(sched_topo_hwloc(w->pool->topo), ptr, size);
}

void sched_worker_stats(const struct sched_worker *w, struct sched_worker_stats *out)
{
	/* relaxed all: statistics */
	out->pushes = atomic_load_explicit(&w->c.pushes, memory_order_relaxed);
	out->pops = atomic_load_explicit(&w->c.pops, memory_order_relaxed);
	out->steals_local = atomic_load_explicit(&w->c.steals_local, memory_order_relaxed);
	out->steals_remote = atomic_load_explicit(&w->c.steals_remote, memory_order_relaxed);
	out->stolen = atomic_load_explicit(&w->c.stolen, memory_order_relaxed);
	out->steal_races = atomic_load_explicit(&w->c.steal_races, memory_order_relaxed);
	out->parks = atomic_load_explicit(&w->c.parks, memory_order_relaxed);
	out->alloc_unbound = atomic_load_explicit(&w->c.alloc_unbound, memory_order_relaxed);
}
