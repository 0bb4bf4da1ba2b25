/* sched/topo.c: synthetic machines with two and four NUMA nodes (cores, nodes, cpusets, and where
 * sched_topo_place puts workers 0..N-1 for N below, at and above the core count), the QSYNC_TOPOLOGY
 * override, bad descriptions, and this real machine loading with at least one core. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define TWO_NODES  "pack:2 numa:1 core:2 pu:1"
#define FOUR_NODES "pack:2 numa:2 core:2 pu:2"

static struct sched_topo *load(const char *synthetic)
{
	struct sched_topo *t = NULL;
	struct qs_err e = {0};
	int rc = sched_topo_load(&t, synthetic, &e);
	if (rc < 0 || !t) {
		fprintf(stderr, "sched_topo_load(%s): %d %s\n", synthetic ? synthetic : "this machine", rc,
		        e.msg);
		exit(2);
	}
	return t;
}

/* Places n workers and compares with want[] = {core, node, core, node, ...}. */
static void expect_place(const struct sched_topo *t, unsigned n, const unsigned *want, unsigned nwant)
{
	struct sched_place pl[64];
	int got = sched_topo_place(t, n, pl, 64);
	if (got != (int)nwant) {
		fprintf(stderr, "place(%u) placed %d, want %u\n", n, got, nwant);
		failures++;
		return;
	}
	for (unsigned i = 0; i < nwant; i++) {
		const unsigned *wi = &want[2 * (size_t)i]; /* {core, node} */
		if (pl[i].core != wi[0] || pl[i].node != wi[1]) {
			fprintf(stderr, "place(%u): worker %u on core %u node %u, want core %u node %u\n", n,
			        i, pl[i].core, pl[i].node, wi[0], wi[1]);
			failures++;
		}
		/* grouping: node indices never go down along the workers */
		if (i > 0 && pl[i].node < pl[i - 1].node) {
			fprintf(stderr, "place(%u): worker %u on node %u after node %u\n", n, i, pl[i].node,
			        pl[i - 1].node);
			failures++;
		}
		CHECK(sched_topo_core_node(t, pl[i].core) == (int)pl[i].node);
	}
}

static void test_two_nodes(void)
{
	struct sched_topo *t = load(TWO_NODES);

	CHECK(!sched_topo_is_thissystem(t));
	CHECK(sched_topo_ncores(t) == 4);
	CHECK(sched_topo_nnodes(t) == 2);
	CHECK(sched_topo_core_node(t, 0) == 0);
	CHECK(sched_topo_core_node(t, 1) == 0);
	CHECK(sched_topo_core_node(t, 2) == 1);
	CHECK(sched_topo_core_node(t, 3) == 1);
	CHECK_RC(sched_topo_core_node(t, 4), -EINVAL);
	CHECK(sched_topo_core_cpuset(t, 4) == NULL);
	CHECK(sched_topo_node_nodeset(t, 2) == NULL);
	CHECK(sched_topo_hwloc(t) != NULL);

	/* each core one PU, all different, inside its node's cpuset */
	for (unsigned c = 0; c < 4; c++) {
		hwloc_const_cpuset_t cs = sched_topo_core_cpuset(t, c);
		CHECK(cs && hwloc_bitmap_weight(cs) == 1);
		for (unsigned d = 0; d < c; d++)
			CHECK(!hwloc_bitmap_intersects(cs, sched_topo_core_cpuset(t, d)));
		hwloc_obj_t node = hwloc_get_obj_by_type(sched_topo_hwloc(t), HWLOC_OBJ_NUMANODE,
		                                         (unsigned)sched_topo_core_node(t, c));
		CHECK(node && hwloc_bitmap_isincluded(cs, node->cpuset));
		CHECK(node &&
		      hwloc_bitmap_isequal(node->nodeset,
		                           sched_topo_node_nodeset(t, (unsigned)sched_topo_core_node(t, c))));
	}

	/* one per core: workers 0,1 on node 0's cores 0,1; workers 2,3 on node 1's cores 2,3 */
	static const unsigned all[] = {0, 0, 1, 0, 2, 1, 3, 1};
	expect_place(t, 0, all, 4);
	expect_place(t, 4, all, 4);
	/* fewer workers than cores: spread over both nodes, not packed onto node 0 */
	static const unsigned one[] = {0, 0};
	expect_place(t, 1, one, 1);
	static const unsigned two[] = {0, 0, 2, 1};
	expect_place(t, 2, two, 2);
	static const unsigned three[] = {0, 0, 1, 0, 2, 1};
	expect_place(t, 3, three, 3);
	/* more workers than cores: wrap around, still grouped by node */
	static const unsigned six[] = {0, 0, 1, 0, 0, 0, 2, 1, 3, 1, 2, 1};
	expect_place(t, 6, six, 6);
	static const unsigned eight[] = {0, 0, 1, 0, 0, 0, 1, 0, 2, 1, 3, 1, 2, 1, 3, 1};
	expect_place(t, 8, eight, 8);

	/* the same answer every time */
	struct sched_place a[5], b[5];
	CHECK_RC(sched_topo_place(t, 5, a, 5), 5);
	CHECK_RC(sched_topo_place(t, 5, b, 5), 5);
	CHECK(memcmp(a, b, sizeof(a)) == 0);

	/* limits */
	CHECK_RC(sched_topo_place(t, 5, a, 4), -ENOSPC);
	CHECK_RC(sched_topo_place(t, 0, a, 3), -ENOSPC);
	CHECK_RC(sched_topo_place(t, SCHED_MAX_WORKERS + 1, a, 5), -EINVAL);
	CHECK_RC(sched_topo_place(NULL, 1, a, 5), -EINVAL);
	CHECK_RC(sched_topo_place(t, 1, NULL, 5), -EINVAL);
	struct sched_place *big = calloc(SCHED_MAX_WORKERS, sizeof(*big));
	CHECK(big && sched_topo_place(t, SCHED_MAX_WORKERS, big, SCHED_MAX_WORKERS) == SCHED_MAX_WORKERS);
	if (big) {
		/* each core gets exactly a quarter */
		unsigned per[4] = {0};
		for (unsigned i = 0; i < SCHED_MAX_WORKERS; i++)
			per[big[i].core < 4 ? big[i].core : 0]++;
		for (unsigned c = 0; c < 4; c++)
			CHECK(per[c] == SCHED_MAX_WORKERS / 4);
		CHECK(big[SCHED_MAX_WORKERS / 2 - 1].node == 0 && big[SCHED_MAX_WORKERS / 2].node == 1);
	}
	free(big);
	sched_topo_free(t);
}

static void test_four_nodes(void)
{
	struct sched_topo *t = load(FOUR_NODES);

	CHECK(sched_topo_ncores(t) == 8);
	CHECK(sched_topo_nnodes(t) == 4);
	for (unsigned c = 0; c < 8; c++) {
		CHECK(sched_topo_core_node(t, c) == (int)(c / 2));
		CHECK(hwloc_bitmap_weight(sched_topo_core_cpuset(t, c)) == 2); /* two PUs per core */
	}
	/* 4 workers: one per node, on each node's first core */
	static const unsigned four[] = {0, 0, 2, 1, 4, 2, 6, 3};
	expect_place(t, 4, four, 4);
	/* 6 workers: every node once, then nodes 0 and 1 again */
	static const unsigned six[] = {0, 0, 1, 0, 2, 1, 3, 1, 4, 2, 6, 3};
	expect_place(t, 6, six, 6);
	static const unsigned eight[] = {0, 0, 1, 0, 2, 1, 3, 1, 4, 2, 5, 2, 6, 3, 7, 3};
	expect_place(t, 0, eight, 8);
	sched_topo_free(t);
}

static void test_env_and_errors(void)
{
	struct sched_topo *t = NULL;
	struct qs_err e = {0};

	CHECK_RC(sched_topo_load(&t, "pack:2 bogus:3", &e), -EINVAL);
	CHECK(t == NULL);
	CHECK(e.code == -EINVAL && strstr(e.msg, "pack:2 bogus:3") != NULL);
	CHECK_RC(sched_topo_load(NULL, NULL, &e), -EINVAL);

	/* QSYNC_TOPOLOGY stands in for this machine, but an explicit description wins */
	setenv(SCHED_TOPO_ENV, FOUR_NODES, 1);
	t = load(NULL);
	CHECK(sched_topo_ncores(t) == 8 && sched_topo_nnodes(t) == 4);
	CHECK(!sched_topo_is_thissystem(t));
	sched_topo_free(t);
	t = load(TWO_NODES);
	CHECK(sched_topo_ncores(t) == 4 && sched_topo_nnodes(t) == 2);
	sched_topo_free(t);
	setenv(SCHED_TOPO_ENV, "garbage", 1);
	t = NULL;
	CHECK_RC(sched_topo_load(&t, NULL, &e), -EINVAL);
	setenv(SCHED_TOPO_ENV, "", 1); /* empty: this machine */
	t = load(NULL);
	CHECK(sched_topo_is_thissystem(t));
	sched_topo_free(t);
	unsetenv(SCHED_TOPO_ENV);
	sched_topo_free(NULL);
}

static void test_this_machine(void)
{
	struct sched_topo *t = load(NULL);
	unsigned nc = sched_topo_ncores(t), nn = sched_topo_nnodes(t);

	CHECK(sched_topo_is_thissystem(t));
	CHECK(nc >= 1);
	CHECK(nn >= 1);
	for (unsigned c = 0; c < nc; c++) {
		int node = sched_topo_core_node(t, c);
		CHECK(node >= 0 && (unsigned)node < nn);
		hwloc_const_cpuset_t cs = sched_topo_core_cpuset(t, c);
		CHECK(cs && !hwloc_bitmap_iszero(cs));
	}
	struct sched_place *pl = calloc(nc, sizeof(*pl));
	CHECK(pl && sched_topo_place(t, 0, pl, nc) == (int)nc);
	/* one per core: every core used once */
	for (unsigned i = 0; pl && i < nc; i++)
		for (unsigned j = 0; j < i; j++)
			CHECK(pl[i].core != pl[j].core);
	printf("test_sched_topo: this machine: %u core(s), %u NUMA node(s)\n", nc, nn);
	free(pl);

	/* bound to one core's CPUs (as under taskset), the topology has just that core */
	if (nc >= 2) {
		hwloc_topology_t hw = sched_topo_hwloc(t);
		hwloc_bitmap_t old = hwloc_bitmap_alloc();
		CHECK(old && hwloc_get_cpubind(hw, old, HWLOC_CPUBIND_PROCESS) == 0);
		CHECK(hwloc_set_cpubind(hw, sched_topo_core_cpuset(t, nc - 1), HWLOC_CPUBIND_PROCESS) == 0);
		struct sched_topo *one = load(NULL);
		CHECK(sched_topo_ncores(one) == 1);
		CHECK(
		    hwloc_bitmap_isequal(sched_topo_core_cpuset(one, 0), sched_topo_core_cpuset(t, nc - 1)));
		CHECK(sched_topo_nnodes(one) == nn); /* memory stays usable */
		sched_topo_free(one);
		/* a synthetic machine is not cut down by where this process runs */
		one = load(TWO_NODES);
		CHECK(sched_topo_ncores(one) == 4);
		sched_topo_free(one);
		CHECK(old && hwloc_set_cpubind(hw, old, HWLOC_CPUBIND_PROCESS) == 0);
		hwloc_bitmap_free(old);
		one = load(NULL);
		CHECK(sched_topo_ncores(one) == nc);
		sched_topo_free(one);
	}
	sched_topo_free(t);
}

int main(void)
{
	unsetenv(SCHED_TOPO_ENV);
	test_two_nodes();
	test_four_nodes();
	test_env_and_errors();
	test_this_machine();
	if (failures) {
		fprintf(stderr, "test_sched_topo: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_sched_topo: ok\n");
	return 0;
}
