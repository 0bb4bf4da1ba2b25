/* sched/deque.c: the owner's LIFO end and the thieves' FIFO end on one thread, growth past the first
 * array, then one owner pushing and popping a million distinct items while three thieves steal (again
 * as push-pop pairs racing for the last item, and again across thousands of deques growing from one
 * slot), each item taken exactly once and what the owner wrote into it seen by whoever took it. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

#define ITEM(i)  ((void *)(uintptr_t)(i))
#define INDEX(p) ((size_t)(uintptr_t)(p))

static struct sched_deque *make(size_t cap)
{
	struct sched_deque *dq = NULL;
	int rc = sched_deque_create(&dq, cap);
	if (rc < 0 || !dq) {
		fprintf(stderr, "sched_deque_create(%zu): %s\n", cap, strerror(-rc));
		exit(2);
	}
	return dq;
}

/* ---- one thread --------------------------------------------------------------------------------- */

static void test_empty(void)
{
	struct sched_deque *dq = make(0);
	void *x = ITEM(77);
	CHECK(sched_deque_capacity(dq) == SCHED_DEQUE_DEFAULT_CAP);
	CHECK(sched_deque_size(dq) == 0);
	CHECK_RC(sched_deque_pop(dq, &x), -ENOENT);
	CHECK_RC(sched_deque_steal(dq, &x), -ENOENT);
	CHECK(x == ITEM(77)); /* untouched when nothing was taken */
	/* empty again after a push and a pop, and after a push and a steal */
	CHECK_RC(sched_deque_push(dq, ITEM(1)), 0);
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == ITEM(1));
	CHECK_RC(sched_deque_pop(dq, &x), -ENOENT);
	CHECK_RC(sched_deque_steal(dq, &x), -ENOENT);
	CHECK_RC(sched_deque_push(dq, ITEM(2)), 0);
	CHECK_RC(sched_deque_steal(dq, &x), 0);
	CHECK(x == ITEM(2));
	CHECK_RC(sched_deque_steal(dq, &x), -ENOENT);
	CHECK_RC(sched_deque_pop(dq, &x), -ENOENT);
	/* NULL is an item like any other */
	CHECK_RC(sched_deque_push(dq, NULL), 0);
	x = ITEM(5);
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == NULL);
	sched_deque_destroy(dq);
	sched_deque_destroy(NULL);
	CHECK_RC(sched_deque_create(NULL, 4), -EINVAL);
}

static void test_order(void)
{
	struct sched_deque *dq = make(8);
	void *x = NULL;

	for (size_t i = 1; i <= 6; i++)
		CHECK_RC(sched_deque_push(dq, ITEM(i)), 0);
	CHECK(sched_deque_size(dq) == 6);
	/* the owner takes the newest, thieves the oldest */
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == ITEM(6));
	CHECK_RC(sched_deque_steal(dq, &x), 0);
	CHECK(x == ITEM(1));
	CHECK_RC(sched_deque_steal(dq, &x), 0);
	CHECK(x == ITEM(2));
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == ITEM(5));
	CHECK(sched_deque_size(dq) == 2);
	CHECK_RC(sched_deque_push(dq, ITEM(7)), 0);
	CHECK_RC(sched_deque_steal(dq, &x), 0);
	CHECK(x == ITEM(3));
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == ITEM(7));
	CHECK_RC(sched_deque_pop(dq, &x), 0);
	CHECK(x == ITEM(4));
	CHECK_RC(sched_deque_pop(dq, &x), -ENOENT);
	CHECK(sched_deque_size(dq) == 0);

	/* the indices wrap around the array many times without it growing */
	for (size_t i = 0; i < 1000; i++) {
		CHECK_RC(sched_deque_push(dq, ITEM(i)), 0);
		CHECK_RC(sched_deque_push(dq, ITEM(i + 1)), 0);
		CHECK_RC(sched_deque_steal(dq, &x), 0);
		CHECK(x == ITEM(i));
		CHECK_RC(sched_deque_pop(dq, &x), 0);
		CHECK(x == ITEM(i + 1));
	}
	CHECK(sched_deque_capacity(dq) == 8);
	sched_deque_destroy(dq);
}

static void test_growth(void)
{
	struct sched_deque *dq = make(5); /* rounded up to 8 */
	const size_t n = 10000;
	void *x = NULL;

	CHECK(sched_deque_capacity(dq) == 8);
	/* start off index 0 so the copy into a grown array has to wrap */
	for (size_t i = 0; i < 5; i++) {
		CHECK_RC(sched_deque_push(dq, ITEM(0)), 0);
		CHECK_RC(sched_deque_steal(dq, &x), 0);
	}
	for (size_t i = 1; i <= n; i++)
		CHECK_RC(sched_deque_push(dq, ITEM(i)), 0);
	CHECK(sched_deque_size(dq) == n);
	CHECK(sched_deque_capacity(dq) >= n && sched_deque_capacity(dq) <= 2 * n);
	CHECK((sched_deque_capacity(dq) & (sched_deque_capacity(dq) - 1)) == 0);
	/* thieves see push order from the front, the owner the reverse from the back */
	for (size_t i = 1; i <= n / 2; i++) {
		CHECK_RC(sched_deque_steal(dq, &x), 0);
		if (x != ITEM(i)) {
			fprintf(stderr, "steal %zu after growth gave %zu\n", i, INDEX(x));
			failures++;
			break;
		}
	}
	for (size_t i = n; i > n / 2; i--) {
		CHECK_RC(sched_deque_pop(dq, &x), 0);
		if (x != ITEM(i)) {
			fprintf(stderr, "pop %zu after growth gave %zu\n", i, INDEX(x));
			failures++;
			break;
		}
	}
	CHECK_RC(sched_deque_pop(dq, &x), -ENOENT);
	CHECK_RC(sched_deque_steal(dq, &x), -ENOENT);
	sched_deque_destroy(dq); /* with every outgrown array: ASan's leak check sees them all freed */
}

/* ---- one owner, three thieves ------------------------------------------------------------------- */

#define STRESS_ITEMS   1000000
#define STRESS_PAIRS   300000 /* items in the push-pop-pairs run: slower per item under TSan */
#define STRESS_THIEVES 3

struct job {
	uint64_t stamp; /* written plainly by the owner before the push, read plainly by the taker */
	_Atomic unsigned char taken;
};

struct stress {
	struct sched_deque *dq;
	struct job *jobs;
	_Atomic bool done; /* the owner has pushed everything and seen the deque empty */
	_Atomic unsigned long dup, bad_stamp;
};

struct thief {
	struct stress *s;
	unsigned long got, races, empty;
};

static uint64_t stamp_of(size_t i)
{
	return (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
}

static void take(struct stress *s, void *x)
{
	size_t i = INDEX(x);
	if (i >= STRESS_ITEMS) {
		atomic_fetch_add(&s->bad_stamp, 1);
		return;
	}
	if (s->jobs[i].stamp != stamp_of(i))
		atomic_fetch_add(&s->bad_stamp, 1);
	if (atomic_fetch_add(&s->jobs[i].taken, 1) != 0)
		atomic_fetch_add(&s->dup, 1);
}

static void *thief_main(void *arg)
{
	struct thief *t = arg;
	struct stress *s = t->s;
	void *x;

	for (;;) {
		int rc = sched_deque_steal(s->dq, &x);
		if (rc == 0) {
			take(s, x);
			t->got++;
		} else if (rc == -EAGAIN) {
			t->races++;
		} else {
			if (atomic_load(&s->done))
				break;
			/* two cores, four threads: let the owner run rather than spin against it */
			if (++t->empty % 64 == 0)
				sched_yield();
		}
	}
	return NULL;
}

static uint32_t rnd(uint32_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 17;
	*st ^= *st << 5;
	return *st;
}

/* pairs: the owner pushes one item and pops it straight back, over and over, so that nearly every
 * pop races a thief for the last item (the case the owner's CAS on top exists for). */
static void test_stress(bool pairs)
{
	const size_t items = pairs ? STRESS_PAIRS : STRESS_ITEMS;
	struct stress s = {0};
	struct thief th[STRESS_THIEVES];
	pthread_t tid[STRESS_THIEVES];
	struct timespec t0, t1;
	unsigned long popped = 0, pushed = 0;
	uint32_t seed = 0x12345678u;
	void *x;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	s.dq = make(16); /* small, so it grows several times while the thieves are at it */
	s.jobs = calloc(STRESS_ITEMS, sizeof(*s.jobs));
	if (!s.jobs) {
		perror("calloc");
		exit(2);
	}
	for (int i = 0; i < STRESS_THIEVES; i++) {
		th[i] = (struct thief){.s = &s};
		if (pthread_create(&tid[i], NULL, thief_main, &th[i]) != 0) {
			perror("pthread_create");
			exit(2);
		}
	}

	/* The owner pushes bursts of 1..64 items (now and then 4096, to force growth mid-race) and pops
	 * 0..burst of them back; half the bursts are of one or two items, so the owner's pop and a
	 * thief's steal often race for the last item. */
	while (pushed < items) {
		uint32_t r = rnd(&seed);
		size_t burst = pairs ? 1 : (r % 1000 == 0) ? 4096 : (r & 1) ? 1 + (r >> 1) % 2 : 1 + r % 64;
		for (size_t k = 0; k < burst && pushed < items; k++) {
			s.jobs[pushed].stamp = stamp_of(pushed);
			if (sched_deque_push(s.dq, ITEM(pushed)) != 0) {
				fprintf(stderr, "push failed\n");
				failures++;
				break;
			}
			pushed++;
		}
		size_t npop = pairs ? 1 : rnd(&seed) % (burst + 1);
		for (size_t k = 0; k < npop && sched_deque_pop(s.dq, &x) == 0; k++) {
			take(&s, x);
			popped++;
		}
	}
	while (sched_deque_pop(s.dq, &x) == 0) {
		take(&s, x);
		popped++;
	}
	atomic_store(&s.done, true);
	unsigned long stolen = 0, races = 0;
	for (int i = 0; i < STRESS_THIEVES; i++) {
		pthread_join(tid[i], NULL);
		stolen += th[i].got;
		races += th[i].races;
	}

	unsigned long missing = 0;
	for (size_t i = 0; i < items; i++)
		if (atomic_load(&s.jobs[i].taken) == 0)
			missing++;
	CHECK(missing == 0);
	CHECK(atomic_load(&s.dup) == 0);
	CHECK(atomic_load(&s.bad_stamp) == 0);
	CHECK(popped + stolen == items);
	CHECK(sched_deque_size(s.dq) == 0);
	CHECK(pairs || sched_deque_capacity(s.dq) > 16);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf(
	    "test_sched_deque: stress (%s): %zu items, popped %lu, stolen %lu (%lu lost races), missing %lu, "
	    "duplicated %lu, capacity %zu, %.2f s\n",
	    pairs ? "push-pop pairs" : "bursts", items, popped, stolen, races, missing, atomic_load(&s.dup),
	    sched_deque_capacity(s.dq),
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	sched_deque_destroy(s.dq);
	free(s.jobs);
}

/* ---- growth under fire: many small deques, each grown from one slot while thieves steal ---------- */

#define GROW_ROUNDS 4000
#define GROW_ITEMS  128 /* per round: seven doublings from a capacity of one */
#define GROW_TOTAL  ((size_t)GROW_ROUNDS * GROW_ITEMS)

struct grow_race {
	struct sched_deque *dq[GROW_ROUNDS]; /* all kept until the end: thieves may lag a round behind */
	_Atomic int cur;                     /* the round thieves steal from; -1 before the first */
	_Atomic bool done;
	_Atomic unsigned char taken[GROW_TOTAL];
	_Atomic unsigned long dup, stolen;
};

static void grow_take(struct grow_race *g, void *x)
{
	size_t i = INDEX(x);
	if (i >= GROW_TOTAL || atomic_fetch_add(&g->taken[i], 1) != 0)
		atomic_fetch_add(&g->dup, 1);
}

static void *grow_thief(void *arg)
{
	struct grow_race *g = arg;
	unsigned long n = 0, empty = 0;
	void *x;

	while (!atomic_load(&g->done)) {
		/* seq_cst (default): the deque at dq[r] was created before cur became r */
		int r = atomic_load(&g->cur);
		if (r < 0)
			continue;
		if (sched_deque_steal(g->dq[r], &x) == 0) {
			grow_take(g, x);
			n++;
		} else if (++empty % 64 == 0) {
			sched_yield();
		}
	}
	atomic_fetch_add(&g->stolen, n);
	return NULL;
}

static void test_grow_race(void)
{
	struct grow_race *g = calloc(1, sizeof(*g));
	pthread_t tid[STRESS_THIEVES];
	struct timespec t0, t1;
	unsigned long popped = 0;
	void *x;

	if (!g) {
		perror("calloc");
		exit(2);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	atomic_store(&g->cur, -1);
	for (int i = 0; i < STRESS_THIEVES; i++)
		if (pthread_create(&tid[i], NULL, grow_thief, g) != 0) {
			perror("pthread_create");
			exit(2);
		}
	for (int r = 0; r < GROW_ROUNDS; r++) {
		g->dq[r] = make(1);
		atomic_store(&g->cur, r);
		for (size_t k = 0; k < GROW_ITEMS; k++)
			CHECK_RC(sched_deque_push(g->dq[r], ITEM((size_t)r * GROW_ITEMS + k)), 0);
		while (sched_deque_pop(g->dq[r], &x) == 0) {
			grow_take(g, x);
			popped++;
		}
	}
	atomic_store(&g->done, true);
	for (int i = 0; i < STRESS_THIEVES; i++)
		pthread_join(tid[i], NULL);

	unsigned long missing = 0;
	for (size_t i = 0; i < GROW_TOTAL; i++)
		missing += atomic_load(&g->taken[i]) == 0;
	CHECK(missing == 0);
	CHECK(atomic_load(&g->dup) == 0);
	CHECK(popped + atomic_load(&g->stolen) == GROW_TOTAL);
	unsigned long doublings = 0, too_big = 0;
	for (int r = 0; r < GROW_ROUNDS; r++) {
		/* thieves keep some deques from ever holding all GROW_ITEMS at once */
		size_t cap = sched_deque_capacity(g->dq[r]);
		too_big += cap > GROW_ITEMS;
		while (cap > 1) {
			cap >>= 1;
			doublings++;
		}
		sched_deque_destroy(g->dq[r]);
	}
	CHECK(too_big == 0);
	CHECK(doublings > GROW_ROUNDS); /* growth did happen, thousands of times */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf(
	    "test_sched_deque: growth race: %d deques, %lu doublings, popped %lu, stolen %lu, missing %lu, "
	    "duplicated %lu, %.2f s\n",
	    GROW_ROUNDS, doublings, popped, atomic_load(&g->stolen), missing, atomic_load(&g->dup),
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(g);
}

int main(void)
{
	test_empty();
	test_order();
	test_growth();
	test_stress(false);
	test_stress(true);
	test_grow_race();
	if (failures) {
		fprintf(stderr, "test_sched_deque: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_sched_deque: ok\n");
	return 0;
}
