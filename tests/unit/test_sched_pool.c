/* sched/pool.c on a synthetic two-node machine (pinning off): all jobs given to one worker run exactly
 * once; scripted steals, one worker at a time, show local thieves served before remote ones, victims
 * rotating, and the local/remote counters; parked workers wake for a push and for a stop; node-local
 * memory is usable and freed; on this real machine workers are pinned to their cores. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched/sched.h"

#include "check.h"

#define CHECK_RC(expr, want)                                                                                 \
	do {                                                                                                 \
		int rc_ = (expr);                                                                            \
		if (rc_ != (want)) {                                                                         \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__, #expr, rc_,    \
			        rc_ < 0 ? strerror(-rc_) : "ok", (want));                                    \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

#define TWO_NODES       "pack:2 numa:1 core:2 pu:1" /* workers 0,1 on node 0; 2,3 on node 1 */
#define TWO_NODES_EIGHT "pack:2 numa:1 core:4 pu:1" /* workers 0..3 on node 0; 4..7 on node 1 */
#define WAIT_MS         10000                       /* for anything that must happen "soon" */

struct job {
	unsigned id;
	unsigned magic; /* written before the push, checked by whoever runs it */
	_Atomic unsigned runs;
	_Atomic int ran_on;
};

#define MAGIC(id) ((id)*2654435761u + 7)

static struct job *make_jobs(unsigned n)
{
	struct job *j = calloc(n, sizeof(*j));
	if (!j) {
		perror("calloc");
		exit(2);
	}
	for (unsigned i = 0; i < n; i++) {
		j[i].id = i;
		j[i].magic = MAGIC(i);
		atomic_init(&j[i].ran_on, -1);
	}
	return j;
}

static struct sched_topo *load(const char *synthetic)
{
	struct sched_topo *t = NULL;
	struct qs_err e = {0};
	if (sched_topo_load(&t, synthetic, &e) < 0) {
		fprintf(stderr, "sched_topo_load: %s\n", e.msg);
		exit(2);
	}
	return t;
}

static struct sched_pool *make_pool(struct sched_topo *t, unsigned n, unsigned flags,
                                    void (*run)(struct sched_worker *, void *), void *ctx)
{
	struct sched_pool_opts o = {
	    .nworkers = n, .flags = flags, .deque_capacity = 4, .run = run, .ctx = ctx};
	struct sched_pool *p = NULL;
	struct qs_err e = {0};
	if (sched_pool_create(&p, t, &o, &e) < 0) {
		fprintf(stderr, "sched_pool_create: %s\n", e.msg);
		exit(2);
	}
	return p;
}

static void start(struct sched_pool *p)
{
	struct qs_err e = {0};
	if (sched_pool_start(p, &e) < 0) {
		fprintf(stderr, "sched_pool_start: %s\n", e.msg);
		exit(2);
	}
}

static struct sched_worker_stats stats(struct sched_pool *p, unsigned i)
{
	struct sched_worker_stats s;
	sched_worker_stats(sched_pool_worker(p, i), &s);
	return s;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* ---- (a) every job runs exactly once ------------------------------------------------------------ */

#define JOBS 20000

struct run_all {
	struct job *jobs;
	_Atomic unsigned done;
	_Atomic unsigned bad;
};

static void run_job(struct run_all *r, struct sched_worker *w, struct job *j)
{
	if (j->magic != MAGIC(j->id))
		atomic_fetch_add(&r->bad, 1);
	atomic_fetch_add(&j->runs, 1);
	atomic_store(&j->ran_on, (int)sched_worker_index(w));
	/* a little work, so the thieves get a chance */
	volatile unsigned x = 0;
	for (unsigned k = 0; k < 200; k++)
		x += k;
	if (atomic_fetch_add(&r->done, 1) + 1 == JOBS)
		sched_pool_stop(sched_worker_pool(w));
}

static void worker_loop(struct sched_worker *w, void *ctx)
{
	void *item;
	while (sched_worker_next(w, &item) == 0)
		run_job(ctx, w, item);
}

static void test_all_jobs_once(void)
{
	struct sched_topo *t = load(TWO_NODES);
	struct run_all r = {.jobs = make_jobs(JOBS)};
	struct sched_pool *p = make_pool(t, 0, SCHED_POOL_NO_PIN, worker_loop, &r);

	CHECK(sched_pool_nworkers(p) == 4);
	for (unsigned i = 0; i < 4; i++) {
		struct sched_worker *w = sched_pool_worker(p, i);
		CHECK(sched_worker_index(w) == i && sched_worker_core(w) == i &&
		      sched_worker_node(w) == i / 2);
		CHECK(sched_worker_pool(w) == p);
		CHECK(sched_worker_pin_status(w) == SCHED_PIN_NOT_YET);
	}
	CHECK(sched_pool_worker(p, 4) == NULL);
	/* all the jobs to worker 0, from this thread before the workers start */
	for (unsigned i = 0; i < JOBS; i++)
		CHECK_RC(sched_worker_push(sched_pool_worker(p, 0), &r.jobs[i]), 0);
	CHECK(sched_pool_pending(p) == JOBS);
	start(p);
	sched_pool_join(p);
	CHECK(sched_pool_pending(p) == 0);

	unsigned wrong = 0;
	for (unsigned i = 0; i < JOBS; i++)
		if (atomic_load(&r.jobs[i].runs) != 1)
			wrong++;
	CHECK(wrong == 0);
	CHECK(atomic_load(&r.done) == JOBS);
	CHECK(atomic_load(&r.bad) == 0);

	struct sched_worker_stats s[4];
	uint64_t steals = 0;
	for (unsigned i = 0; i < 4; i++) {
		s[i] = stats(p, i);
		steals += s[i].steals_local + s[i].steals_remote;
		CHECK(sched_worker_pin_status(sched_pool_worker(p, i)) == SCHED_PIN_SKIPPED);
	}
	CHECK(s[0].pushes == JOBS);
	CHECK(s[0].pops + steals == JOBS);
	CHECK(s[0].stolen == steals);
	/* only worker 0 ever held jobs: worker 1 can only have stolen locally, 2 and 3 only remotely */
	CHECK(s[0].steals_local == 0 && s[0].steals_remote == 0);
	CHECK(s[1].steals_remote == 0);
	CHECK(s[2].steals_local == 0 && s[3].steals_local == 0);
	for (unsigned i = 1; i < 4; i++)
		CHECK(s[i].pushes == 0 && s[i].pops == 0 && s[i].stolen == 0);
	printf(
	    "test_sched_pool: %d jobs: worker 0 popped %llu; stolen locally by 1: %llu, remotely by 2: %llu, "
	    "by 3: %llu\n",
	    JOBS, (unsigned long long)s[0].pops, (unsigned long long)s[1].steals_local,
	    (unsigned long long)s[2].steals_remote, (unsigned long long)s[3].steals_remote);

	/* after join, nothing left and the pool can be dropped */
	void *x;
	for (unsigned i = 0; i < 4; i++)
		CHECK_RC(sched_worker_pop(sched_pool_worker(p, i), &x), -ENOENT);
	CHECK(sched_pool_stopping(p));
	sched_pool_join(p); /* again: fine */
	sched_pool_destroy(p);
	sched_topo_free(t);
	free(r.jobs);
}

/* ---- (b), (c) scripted: one worker acts at a time, on its own thread ---------------------------- */

enum op { OP_PUSH, OP_POP, OP_STEAL };

struct script {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int turn; /* the worker to act, -1 when none */
	bool quit;
	enum op op;
	unsigned n; /* OP_PUSH: how many jobs */
	int rc;
	void *item;
	struct job *jobs;
	unsigned next_job;
};

static void script_worker(struct sched_worker *w, void *ctx)
{
	struct script *s = ctx;
	int me = (int)sched_worker_index(w);

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (s->turn != me && !s->quit)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->quit)
			break;
		enum op op = s->op;
		unsigned n = s->n;
		unsigned first = s->next_job;
		s->next_job += op == OP_PUSH ? n : 0;
		pthread_mutex_unlock(&s->lock);

		int rc = 0;
		void *item = NULL;
		if (op == OP_PUSH)
			for (unsigned k = 0; k < n && rc == 0; k++)
				rc = sched_worker_push(w, &s->jobs[first + k]);
		else if (op == OP_POP)
			rc = sched_worker_pop(w, &item);
		else
			rc = sched_worker_steal(w, &item);

		pthread_mutex_lock(&s->lock);
		s->rc = rc;
		s->item = item;
		s->turn = -1;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Has worker w do op; returns its rc, the item it got, and which worker lost an item (-1: none). */
static int step(struct script *s, struct sched_pool *p, unsigned w, enum op op, unsigned n, struct job **item,
                int *victim)
{
	unsigned nw = sched_pool_nworkers(p);
	uint64_t before[16];
	for (unsigned i = 0; i < nw; i++)
		before[i] = stats(p, i).stolen;

	pthread_mutex_lock(&s->lock);
	s->op = op;
	s->n = n;
	s->turn = (int)w;
	pthread_cond_broadcast(&s->cond);
	while (s->turn != -1)
		pthread_cond_wait(&s->cond, &s->lock);
	int rc = s->rc;
	if (item)
		*item = s->item;
	pthread_mutex_unlock(&s->lock);

	if (victim) {
		*victim = -1;
		for (unsigned i = 0; i < nw; i++)
			if (stats(p, i).stolen != before[i])
				*victim = (int)i;
	}
	if (rc == 0 && item && *item)
		atomic_fetch_add(&(*item)->runs, 1);
	return rc;
}

/* Worker thief steals; expects rc, and on success the job id and the victim. */
static void expect_steal(struct script *s, struct sched_pool *p, unsigned thief, int want_rc, int want_job,
                         int want_victim, int line)
{
	struct job *j = NULL;
	int victim = -1;
	int rc = step(s, p, thief, OP_STEAL, 0, &j, &victim);
	if (rc != want_rc || (rc == 0 && ((int)j->id != want_job || victim != want_victim)) ||
	    (rc != 0 && victim != -1)) {
		fprintf(stderr,
		        "%s:%d: worker %u steal: rc %d job %d from worker %d, want rc %d job %d from %d\n",
		        __FILE__, line, thief, rc, rc == 0 ? (int)j->id : -1, victim, want_rc, want_job,
		        want_victim);
		failures++;
	}
}

#define STEAL(thief, rc, job, victim) expect_steal(&s, p, thief, rc, job, victim, __LINE__)

static void script_init(struct script *s, struct job *jobs)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->turn = -1;
	s->jobs = jobs;
}

static void script_end(struct script *s, struct sched_pool *p)
{
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	sched_pool_join(p);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
}

static void test_local_first(void)
{
	struct sched_topo *t = load(TWO_NODES);
	struct job *jobs = make_jobs(10);
	struct script s;
	struct job *j = NULL;
	script_init(&s, jobs);
	struct sched_pool *p = make_pool(t, 4, SCHED_POOL_NO_PIN, script_worker, &s);
	start(p);

	CHECK_RC(step(&s, p, 0, OP_PUSH, 8, NULL, NULL), 0); /* jobs 0..7 on worker 0, node 0 */
	CHECK(sched_pool_pending(p) == 8);

	/* Round 1, remote thieves asking first: they look at their own node (empty) and wait their turn;
	 * worker 1, on the loaded worker's node, gets the oldest job. */
	STEAL(3, -EAGAIN, 0, 0);
	STEAL(2, -EAGAIN, 0, 0);
	STEAL(1, 0, 0, 0);
	CHECK(sched_pool_pending(p) == 7);
	/* Round 2: now the remote thieves reach across to node 0 too. */
	STEAL(3, 0, 1, 0);
	STEAL(2, 0, 2, 0);
	STEAL(1, 0, 3, 0);
	/* Work on node 1: its thief takes it rather than worker 0's, which has more. */
	CHECK_RC(step(&s, p, 2, OP_PUSH, 2, NULL, NULL), 0); /* jobs 8, 9 on worker 2 */
	STEAL(3, 0, 8, 2);
	STEAL(1, 0, 4, 0);
	STEAL(3, 0, 9, 2);
	STEAL(3, -EAGAIN, 0, 0); /* node 1 empty again: one more local look first */
	STEAL(3, 0, 5, 0);
	/* the owner takes from the other end */
	CHECK_RC(step(&s, p, 0, OP_POP, 0, &j, NULL), 0);
	CHECK(j == &jobs[7]);
	CHECK_RC(step(&s, p, 0, OP_POP, 0, &j, NULL), 0);
	CHECK(j == &jobs[6]);
	CHECK_RC(step(&s, p, 0, OP_POP, 0, &j, NULL), -ENOENT);
	/* nothing anywhere: -EAGAIN while only the own node was looked at, then -ENOENT */
	STEAL(1, -EAGAIN, 0, 0);
	STEAL(1, -ENOENT, 0, 0);
	STEAL(0, -EAGAIN, 0, 0);
	STEAL(0, -ENOENT, 0, 0);
	CHECK(sched_pool_pending(p) == 0);
	script_end(&s, p);

	for (unsigned i = 0; i < 10; i++)
		CHECK(atomic_load(&jobs[i].runs) == 1);
	struct sched_worker_stats w0 = stats(p, 0), w1 = stats(p, 1), w2 = stats(p, 2), w3 = stats(p, 3);
	CHECK(w0.pushes == 8 && w0.pops == 2 && w0.stolen == 6);
	CHECK(w0.steals_local == 0 && w0.steals_remote == 0);
	CHECK(w1.steals_local == 3 && w1.steals_remote == 0);
	CHECK(w2.steals_local == 0 && w2.steals_remote == 1 && w2.pushes == 2 && w2.stolen == 2);
	CHECK(w3.steals_local == 2 && w3.steals_remote == 2 && w3.stolen == 0);
	for (unsigned i = 0; i < 4; i++)
		CHECK(stats(p, i).steal_races == 0); /* one thief at a time: no races */
	sched_pool_destroy(p);
	sched_topo_free(t);
	free(jobs);
}

static void test_rotation(void)
{
	struct sched_topo *t = load(TWO_NODES_EIGHT);
	struct job *jobs = make_jobs(6);
	struct script s;
	script_init(&s, jobs);
	struct sched_pool *p = make_pool(t, 0, SCHED_POOL_NO_PIN, script_worker, &s);
	start(p);
	CHECK(sched_pool_nworkers(p) == 8);

	CHECK_RC(step(&s, p, 0, OP_PUSH, 2, NULL, NULL), 0); /* jobs 0, 1 */
	CHECK_RC(step(&s, p, 2, OP_PUSH, 2, NULL, NULL), 0); /* jobs 2, 3 */
	CHECK_RC(step(&s, p, 3, OP_PUSH, 2, NULL, NULL), 0); /* jobs 4, 5 */
	/* worker 1 starts after itself and moves one victim further each time: 2, 3, then 0 */
	STEAL(1, 0, 2, 2);
	STEAL(1, 0, 4, 3);
	STEAL(1, 0, 0, 0);
	/* other thieves start elsewhere: worker 3 after itself, at 0; worker 2 at 3 */
	STEAL(3, 0, 1, 0);
	STEAL(2, 0, 5, 3);
	/* a remote thief (node 1) looks at its own node first, then starts on node 0 at a victim given by
	 * its index and call count: worker 5, second call, at (5 + 1) mod 4 = 2 */
	STEAL(5, -EAGAIN, 0, 0);
	STEAL(5, 0, 3, 2);
	script_end(&s, p);
	for (unsigned i = 0; i < 6; i++)
		CHECK(atomic_load(&jobs[i].runs) == 1);
	sched_pool_destroy(p);
	sched_topo_free(t);
	free(jobs);
}

/* ---- parking: a push wakes a sleeper, a stop wakes them all ------------------------------------- */

struct park_ctx {
	struct job job;
	_Atomic bool ok;
};

static bool wait_for(struct sched_pool *p, unsigned from, unsigned to,
                     bool (*cond)(struct sched_pool *, unsigned))
{
	for (unsigned ms = 0; ms < WAIT_MS; ms++) {
		bool all = true;
		for (unsigned i = from; i < to; i++)
			all = all && cond(p, i);
		if (all)
			return true;
		sleep_ms(1);
	}
	return false;
}

static bool has_parked(struct sched_pool *p, unsigned i)
{
	return stats(p, i).parks >= 1;
}

static void park_worker(struct sched_worker *w, void *ctx)
{
	struct park_ctx *c = ctx;
	struct sched_pool *p = sched_worker_pool(w);
	void *item;

	if (sched_worker_index(w) != 0) {
		while (sched_worker_next(w, &item) == 0) {
			struct job *j = item;
			atomic_fetch_add(&j->runs, 1);
			atomic_store(&j->ran_on, (int)sched_worker_index(w));
		}
		return;
	}
	/* Worker 0 waits until the others sleep, pushes one job and never takes it back: only a woken
	 * sleeper can run it. */
	if (!wait_for(p, 1, sched_pool_nworkers(p), has_parked))
		goto out;
	if (sched_worker_push(w, &c->job) != 0)
		goto out;
	for (unsigned ms = 0; ms < WAIT_MS && atomic_load(&c->job.runs) == 0; ms++)
		sleep_ms(1);
	/* and that they sleep again once it is done */
	for (unsigned ms = 0; ms < WAIT_MS; ms++) {
		uint64_t parks = 0;
		for (unsigned i = 1; i < sched_pool_nworkers(p); i++)
			parks += stats(p, i).parks;
		if (parks >= sched_pool_nworkers(p))
			break;
		sleep_ms(1);
	}
	atomic_store(&c->ok, atomic_load(&c->job.runs) == 1);
out:
	sched_pool_stop(p); /* the sleepers must wake and return */
}

static void test_parking(void)
{
	struct sched_topo *t = load(TWO_NODES);
	struct park_ctx c = {.job = {.id = 0, .magic = MAGIC(0)}};
	atomic_init(&c.job.ran_on, -1);
	struct sched_pool *p = make_pool(t, 0, SCHED_POOL_NO_PIN, park_worker, &c);
	start(p);
	sched_pool_join(p);
	CHECK(atomic_load(&c.ok));
	CHECK(atomic_load(&c.job.runs) == 1);
	CHECK(atomic_load(&c.job.ran_on) >= 1);
	CHECK(sched_pool_pending(p) == 0);
	uint64_t parks = 0;
	for (unsigned i = 1; i < 4; i++)
		parks += stats(p, i).parks;
	CHECK(parks >= 4); /* three before the push, at least one more after it */
	sched_pool_destroy(p);

	/* a pool stopped before any work: every worker returns; destroy without join stops it too */
	p = make_pool(t, 0, SCHED_POOL_NO_PIN, worker_loop, NULL);
	start(p);
	sleep_ms(5);
	sched_pool_stop(p);
	sched_pool_join(p);
	sched_pool_destroy(p);
	p = make_pool(t, 0, SCHED_POOL_NO_PIN, worker_loop, NULL);
	start(p);
	sched_pool_destroy(p);
	sched_topo_free(t);
}

/* ---- lifecycle and errors ----------------------------------------------------------------------- */

static void nothing(struct sched_worker *w, void *ctx)
{
}

static void test_lifecycle(void)
{
	struct sched_topo *t = load(TWO_NODES);
	struct sched_pool_opts o = {.run = nothing};
	struct sched_pool *p = NULL;
	struct qs_err e = {0};

	o.run = NULL;
	CHECK_RC(sched_pool_create(&p, t, &o, &e), -EINVAL);
	CHECK(p == NULL && e.code == -EINVAL);
	o.run = nothing;
	CHECK_RC(sched_pool_create(&p, NULL, &o, &e), -EINVAL);
	o.nworkers = SCHED_MAX_WORKERS + 1;
	CHECK_RC(sched_pool_create(&p, t, &o, &e), -EINVAL);
	CHECK(strstr(e.msg, "workers") != NULL);
	o.nworkers = 6; /* more than cores: wraps */
	CHECK_RC(sched_pool_create(&p, t, &o, &e), 0);
	CHECK(sched_pool_nworkers(p) == 6);
	CHECK(sched_worker_core(sched_pool_worker(p, 2)) == 0 &&
	      sched_worker_node(sched_pool_worker(p, 3)) == 1);
	sched_pool_join(p); /* before start: returns at once */

	/* seeded work stays when run() returns without taking it; after join it can be drained */
	struct job *jobs = make_jobs(3);
	for (unsigned i = 0; i < 3; i++)
		CHECK_RC(sched_worker_push(sched_pool_worker(p, 4), &jobs[i]), 0);
	CHECK_RC(sched_pool_start(p, &e), 0);
	CHECK_RC(sched_pool_start(p, &e), -EINVAL);
	sched_pool_join(p);
	void *x = NULL;
	CHECK_RC(sched_worker_pop(sched_pool_worker(p, 4), &x), 0);
	CHECK(x == &jobs[2]);
	CHECK_RC(sched_worker_steal(sched_pool_worker(p, 5), &x), 0);
	CHECK(x == &jobs[0]);
	CHECK_RC(sched_worker_pop(sched_pool_worker(p, 4), &x), 0);
	CHECK(x == &jobs[1]);
	CHECK_RC(sched_worker_pop(sched_pool_worker(p, 4), &x), -ENOENT);
	CHECK(!sched_pool_stopping(p));
	sched_pool_destroy(p);
	sched_pool_destroy(NULL);
	free(jobs);
	sched_topo_free(t);
}

/* ---- node-local memory, and pinning on this machine --------------------------------------------- */

#define ALLOC_SIZE (1u << 20)

struct mem_ctx {
	const struct sched_topo *topo;
	_Atomic unsigned ok, bad;
	_Atomic unsigned pinned_right, pin_failed;
};

static void mem_worker(struct sched_worker *w, void *ctx)
{
	struct mem_ctx *c = ctx;
	struct sched_worker_stats before, after;

	sched_worker_stats(w, &before);

	errno = 0;
	if (sched_worker_alloc(w, 0) != NULL || errno != EINVAL)
		atomic_fetch_add(&c->bad, 1);

	unsigned char *m = sched_worker_alloc(w, ALLOC_SIZE);
	if (!m || ((uintptr_t)m & 4095) != 0) {
		atomic_fetch_add(&c->bad, 1);
		return;
	}
	unsigned char tag = (unsigned char)(0x40 + sched_worker_index(w));
	memset(m, tag, ALLOC_SIZE);
	bool same = true;
	for (size_t i = 0; i < ALLOC_SIZE; i += 4093)
		same = same && m[i] == tag;
	same = same && m[ALLOC_SIZE - 1] == tag;

	sched_worker_stats(w, &after);
	if (c->topo && after.alloc_unbound == before.alloc_unbound) {
		/* said to be bound: the kernel agrees it is bound to the worker's node */
		hwloc_nodeset_t ns = hwloc_bitmap_alloc();
		hwloc_membind_policy_t pol = HWLOC_MEMBIND_DEFAULT;
		if (!ns ||
		    hwloc_get_area_membind(sched_topo_hwloc(c->topo), m, ALLOC_SIZE, ns, &pol,
		                           HWLOC_MEMBIND_BYNODESET) < 0 ||
		    pol != HWLOC_MEMBIND_BIND ||
		    !hwloc_bitmap_isequal(ns, sched_topo_node_nodeset(c->topo, sched_worker_node(w))))
			same = false;
		hwloc_bitmap_free(ns);
	}
	sched_worker_free(w, m, ALLOC_SIZE);
	sched_worker_free(w, NULL, 0);
	atomic_fetch_add(same && after.alloc_unbound - before.alloc_unbound <= 1 ? &c->ok : &c->bad, 1);
}

static void test_alloc_synthetic(void)
{
	struct sched_topo *t = load(TWO_NODES);
	struct mem_ctx c = {0};
	struct sched_pool *p = make_pool(t, 0, SCHED_POOL_NO_PIN, mem_worker, &c);
	start(p);
	sched_pool_join(p);
	CHECK(atomic_load(&c.ok) == 4 && atomic_load(&c.bad) == 0);
	/* a synthetic machine cannot bind memory: said so in the counter */
	for (unsigned i = 0; i < 4; i++)
		CHECK(stats(p, i).alloc_unbound == 1);
	sched_pool_destroy(p);
	sched_topo_free(t);
}

static void pin_worker(struct sched_worker *w, void *ctx)
{
	struct mem_ctx *c = ctx;
	int st = sched_worker_pin_status(w);

	if (st == 0) {
		/* the cpuset this thread is bound to is its core's */
		hwloc_bitmap_t cur = hwloc_bitmap_alloc();
		if (cur && hwloc_get_cpubind(sched_topo_hwloc(c->topo), cur, HWLOC_CPUBIND_THREAD) == 0 &&
		    hwloc_bitmap_isequal(cur, sched_topo_core_cpuset(c->topo, sched_worker_core(w))))
			atomic_fetch_add(&c->pinned_right, 1);
		else
			atomic_fetch_add(&c->bad, 1);
		hwloc_bitmap_free(cur);
	} else if (st < 0) {
		atomic_fetch_add(&c->pin_failed, 1); /* allowed: recorded, not fatal */
	} else {
		atomic_fetch_add(&c->bad, 1);
	}
	mem_worker(w, ctx);
}

static void test_real_machine(void)
{
	struct sched_topo *t = load(NULL);
	struct mem_ctx c = {.topo = t};
	unsigned n = sched_topo_ncores(t);
	struct sched_pool *p = make_pool(t, 0, 0, pin_worker, &c);
	start(p);
	sched_pool_join(p);
	CHECK(sched_pool_nworkers(p) == n);
	CHECK(atomic_load(&c.bad) == 0);
	CHECK(atomic_load(&c.ok) == n);
	CHECK(atomic_load(&c.pinned_right) + atomic_load(&c.pin_failed) == n);
	uint64_t unbound = 0;
	for (unsigned i = 0; i < n; i++)
		unbound += stats(p, i).alloc_unbound;
	printf("test_sched_pool: this machine: %u worker(s), %u pinned, %u pin failure(s), %llu unbound "
	       "allocation(s)\n",
	       n, atomic_load(&c.pinned_right), atomic_load(&c.pin_failed), (unsigned long long)unbound);
	sched_pool_destroy(p);

	/* pinning off: nobody pinned */
	c = (struct mem_ctx){.topo = t};
	p = make_pool(t, 0, SCHED_POOL_NO_PIN, mem_worker, &c);
	start(p);
	sched_pool_join(p);
	for (unsigned i = 0; i < n; i++)
		CHECK(sched_worker_pin_status(sched_pool_worker(p, i)) == SCHED_PIN_SKIPPED);
	CHECK(atomic_load(&c.ok) == n);
	sched_pool_destroy(p);
	sched_topo_free(t);
}

int main(void)
{
	unsetenv(SCHED_TOPO_ENV);
	test_all_jobs_once();
	test_local_first();
	test_rotation();
	test_parking();
	test_lifecycle();
	test_alloc_synthetic();
	test_real_machine();
	if (failures) {
		fprintf(stderr, "test_sched_pool: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_sched_pool: ok\n");
	return 0;
}
