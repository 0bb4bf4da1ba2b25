/* The Chase–Lev work-stealing deque in C11 atomics, after Lê, Pop, Cohen and Zappa Nardelli, "Correct
 * and Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013), figure 1. Where the paper puts a
 * standalone fence next to a relaxed access, the access itself carries the order here (a release store,
 * seq_cst loads and stores): the same guarantees, and ThreadSanitizer, which ignores fences, can check it. */
#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "sched/sched.h"

#define CACHE_LINE 64

struct deque_array {
	struct deque_array *retired; /* the array this one replaced; freed with the deque */
	size_t mask;                 /* capacity - 1, capacity a power of two */
	_Atomic(void *) slot[];      /* atomic: a thief may read a slot the owner is overwriting */
};

struct sched_deque {
	/* Index of the oldest item: thieves (and the owner, for the last item) advance it by CAS only. */
	alignas(CACHE_LINE) _Atomic int64_t top;
	/* One past the newest item: written by the owner only. */
	alignas(CACHE_LINE) _Atomic int64_t bottom;
	/* The current array: replaced by the owner only, when it grows. */
	_Atomic(struct deque_array *) array;
};

static struct deque_array *array_new(size_t cap)
{
	if (cap > (SIZE_MAX - sizeof(struct deque_array)) / sizeof(_Atomic(void *)))
		return NULL;
	/* calloc: a thief holding a stale index may read a slot never written; it then loses its CAS. */
	struct deque_array *a = calloc(1, sizeof(*a) + cap * sizeof(a->slot[0]));
	if (a)
		a->mask = cap - 1;
	return a;
}

int sched_deque_create(struct sched_deque **out, size_t capacity)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (capacity == 0)
		capacity = SCHED_DEQUE_DEFAULT_CAP;
	size_t cap = 1;
	while (cap < capacity) {
		if (cap > SIZE_MAX / 4)
			return -ENOMEM;
		cap <<= 1;
	}
	struct sched_deque *dq = aligned_alloc(CACHE_LINE, sizeof(*dq));
	if (!dq)
		return -ENOMEM;
	struct deque_array *a = array_new(cap);
	if (!a) {
		free(dq);
		return -ENOMEM;
	}
	atomic_init(&dq->top, 0);
	atomic_init(&dq->bottom, 0);
	atomic_init(&dq->array, a);
	*out = dq;
	return 0;
}

void sched_deque_destroy(struct sched_deque *dq)
{
	if (!dq)
		return;
	struct deque_array *a =
	    atomic_load_explicit(&dq->array, memory_order_relaxed); /* no other user left */
	while (a) {
		struct deque_array *prev = a->retired;
		free(a);
		a = prev;
	}
	free(dq);
}

/* Owner: replaces a, full with the items [t, b), by an array twice its size holding the same items. */
static struct deque_array *grow(struct sched_deque *dq, struct deque_array *a, int64_t t, int64_t b)
{
	size_t cap = a->mask + 1;
	if (cap > SIZE_MAX / 2)
		return NULL;
	struct deque_array *na = array_new(cap * 2);
	if (!na)
		return NULL;
	for (int64_t i = t; i < b; i++) {
		/* relaxed both: the owner reads its own writes; the copies are published by the store below
		 */
		void *x = atomic_load_explicit(&a->slot[(size_t)i & a->mask], memory_order_relaxed);
		atomic_store_explicit(&na->slot[(size_t)i & na->mask], x, memory_order_relaxed);
	}
	/* The old array stays readable: a thief that loaded it before this store still reads the right
	 * items from it, since the owner never writes to it again. */
	na->retired = a;
	/* release: a thief that loads na (acquire, in steal) sees the copied slots */
	atomic_store_explicit(&dq->array, na, memory_order_release);
	return na;
}

int sched_deque_push(struct sched_deque *dq, void *item)
{
	/* relaxed: only the owner writes bottom and array, and this is the owner */
	int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
	/* acquire: pairs with the thieves' CAS on top, so a slot a thief read before advancing top is not
	 * overwritten under it (the paper's acquire load of top) */
	int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
	struct deque_array *a = atomic_load_explicit(&dq->array, memory_order_relaxed);

	if (b - t > (int64_t)a->mask) {
		a = grow(dq, a, t, b);
		if (!a)
			return -ENOMEM;
	}
	/* relaxed: published by the release store of bottom just below */
	atomic_store_explicit(&a->slot[(size_t)b & a->mask], item, memory_order_relaxed);
	/* release (the paper's release fence + relaxed store): a thief that reads this bottom sees the slot
	 * and everything the owner wrote into the item before pushing it */
	atomic_store_explicit(&dq->bottom, b + 1, memory_order_release);
	return 0;
}

int sched_deque_pop(struct sched_deque *dq, void **item)
{
	/* relaxed: the owner's own variables */
	int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed) - 1;
	struct deque_array *a = atomic_load_explicit(&dq->array, memory_order_relaxed);
	/* seq_cst store then seq_cst load (the paper's relaxed store, seq_cst fence, relaxed load): claiming
	 * slot b and then reading top is ordered against a thief's seq_cst load of top then of bottom, so the
	 * owner and a thief cannot both miss each other and take the same item without a CAS */
	atomic_store_explicit(&dq->bottom, b, memory_order_seq_cst);
	int64_t t = atomic_load_explicit(&dq->top, memory_order_seq_cst);

	if (t > b) {
		/* empty: undo the claim; relaxed, as the paper (thieves seeing b or b + 1 both see empty) */
		atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
		return -ENOENT;
	}
	/* relaxed: the owner wrote this slot itself */
	void *x = atomic_load_explicit(&a->slot[(size_t)b & a->mask], memory_order_relaxed);
	if (t == b) {
		/* the last item: race the thieves for it on top. seq_cst on success (as the paper) orders it
		 * with the thieves' CAS; relaxed on failure, since then nothing is read from the item */
		bool won = atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1, memory_order_seq_cst,
		                                                   memory_order_relaxed);
		/* relaxed: top is now b + 1 either way, so the deque reads empty whichever bottom a thief
		 * sees */
		atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
		if (!won)
			return -ENOENT;
	}
	*item = x;
	return 0;
}

int sched_deque_steal(struct sched_deque *dq, void **item)
{
	/* seq_cst (the paper's acquire load + seq_cst fence): acquire pairs with the CAS of the thief that
	 * last advanced top; seq_cst keeps this load before the load of bottom, in one order with the
	 * owner's store of bottom and load of top in pop */
	int64_t t = atomic_load_explicit(&dq->top, memory_order_seq_cst);
	/* seq_cst, which includes acquire (the paper's acquire load): pairs with push's release store of
	 * bottom, so the slot t and the item's contents are visible */
	int64_t b = atomic_load_explicit(&dq->bottom, memory_order_seq_cst);
	if (t >= b)
		return -ENOENT;

	/* acquire (the paper's consume): pairs with grow's release store, so a new array's copied slots are
	 * visible; an outgrown array read here still holds index t, as the owner no longer writes it */
	struct deque_array *a = atomic_load_explicit(&dq->array, memory_order_acquire);
	/* relaxed: ordered by the loads above; if the owner has since reused this slot, the CAS fails */
	void *x = atomic_load_explicit(&a->slot[(size_t)t & a->mask], memory_order_relaxed);
	/* seq_cst on success (as the paper): take index t, ordered with the owner's CAS for the last item
	 * and releasing our read of the slot to push's acquire load of top; relaxed on failure: x is
	 * discarded */
	if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1, memory_order_seq_cst,
	                                             memory_order_relaxed))
		return -EAGAIN;
	*item = x;
	return 0;
}

size_t sched_deque_size(const struct sched_deque *dq)
{
	/* relaxed both: a snapshot with no ordering promise */
	int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
	int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
	return b > t ? (size_t)(b - t) : 0;
}

size_t sched_deque_capacity(const struct sched_deque *dq)
{
	/* relaxed: the owner reads what it wrote itself */
	struct deque_array *a = atomic_load_explicit(&dq->array, memory_order_relaxed);
	return a->mask + 1;
}
