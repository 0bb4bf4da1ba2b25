/* The machine as the scheduler sees it: cores, the NUMA node each belongs to, and where workers go.
 * hwloc does the discovery (or builds a synthetic machine for tests); this file flattens its tree into
 * two arrays the pool can index without walking hwloc objects. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"

struct topo_core {
	hwloc_obj_t obj; /* a Core (or a PU when there are no cores) */
	unsigned node;
};

struct sched_topo {
	hwloc_topology_t hw;
	unsigned ncores, nnodes;
	struct topo_core *cores;
	hwloc_obj_t *nodes; /* NUMA node objects by logical index */
};

/* The logical index of the first NUMA node local to obj (0 when hwloc cannot tell). */
static unsigned node_of(hwloc_topology_t hw, hwloc_obj_t obj)
{
	int os = obj->nodeset ? hwloc_bitmap_first(obj->nodeset) : -1;
	hwloc_obj_t n = os >= 0 ? hwloc_get_numanode_obj_by_os_index(hw, (unsigned)os) : NULL;
	return n ? n->logical_index : 0;
}

/* Drops the cores this process may not run on (taskset, numactl --physcpubind), as the cgroup's
 * cpuset is already dropped by hwloc itself. */
static int restrict_to_binding(hwloc_topology_t hw, struct qs_err *err)
{
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	int rc = 0;

	if (!set)
		return qs_err_set(err, -ENOMEM, "out of memory loading the topology");
	if (hwloc_get_cpubind(hw, set, HWLOC_CPUBIND_PROCESS) < 0 || hwloc_bitmap_iszero(set) ||
	    !hwloc_bitmap_intersects(set, hwloc_topology_get_topology_cpuset(hw)) ||
	    hwloc_bitmap_isincluded(hwloc_topology_get_topology_cpuset(hw), set))
		goto out; /* unknown, or nothing to drop: keep the whole machine */
	if (hwloc_topology_restrict(hw, set, 0) < 0 && errno != EINVAL)
		rc = qs_err_set(err, -ENOMEM, "hwloc_topology_restrict: %s", strerror(errno));
out:
	hwloc_bitmap_free(set);
	return rc;
}

int sched_topo_load(struct sched_topo **out, const char *synthetic, struct qs_err *err)
{
	struct sched_topo *t = NULL;
	int rc;

	if (!out)
		return qs_err_set(err, -EINVAL, "sched_topo_load: no output");
	*out = NULL;
	if (!synthetic) {
		const char *env = getenv(SCHED_TOPO_ENV);
		if (env && *env)
			synthetic = env;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return qs_err_set(err, -ENOMEM, "out of memory loading the topology");
	if (hwloc_topology_init(&t->hw) < 0) {
		rc = qs_err_set(err, errno ? -errno : -ENOMEM, "hwloc_topology_init: %s", strerror(errno));
		t->hw = NULL;
		goto out;
	}
	if (synthetic && hwloc_topology_set_synthetic(t->hw, synthetic) < 0) {
		rc = qs_err_set(err, -EINVAL,
		                "invalid synthetic topology \"%.100s\" (see hwloc_topology_set_synthetic)",
		                synthetic);
		goto out;
	}
	if (hwloc_topology_load(t->hw) < 0) {
		rc = qs_err_set(err, errno ? -errno : -EIO, "hwloc_topology_load: %s", strerror(errno));
		goto out;
	}
	if (!synthetic && hwloc_topology_is_thissystem(t->hw) && (rc = restrict_to_binding(t->hw, err)) < 0)
		goto out;

	hwloc_obj_type_t type = HWLOC_OBJ_CORE;
	int n = hwloc_get_nbobjs_by_type(t->hw, type);
	if (n <= 0) {
		type = HWLOC_OBJ_PU;
		n = hwloc_get_nbobjs_by_type(t->hw, type);
	}
	int nn = hwloc_get_nbobjs_by_type(t->hw, HWLOC_OBJ_NUMANODE);
	if (n <= 0 || nn <= 0) {
		rc = qs_err_set(err, -ENODEV, "topology has %d cores and %d NUMA nodes", n, nn);
		goto out;
	}
	t->ncores = (unsigned)n;
	t->nnodes = (unsigned)nn;
	t->cores = calloc(t->ncores, sizeof(*t->cores));
	t->nodes = calloc(t->nnodes, sizeof(hwloc_obj_t));
	if (!t->cores || !t->nodes) {
		rc = qs_err_set(err, -ENOMEM, "out of memory loading the topology");
		goto out;
	}
	for (unsigned i = 0; i < t->nnodes; i++)
		t->nodes[i] = hwloc_get_obj_by_type(t->hw, HWLOC_OBJ_NUMANODE, i);
	for (unsigned i = 0; i < t->ncores; i++) {
		t->cores[i].obj = hwloc_get_obj_by_type(t->hw, type, i);
		t->cores[i].node = node_of(t->hw, t->cores[i].obj);
	}
	*out = t;
	return 0;
out:
	sched_topo_free(t);
	return rc;
}

void sched_topo_free(struct sched_topo *t)
{
	if (!t)
		return;
	if (t->hw)
		hwloc_topology_destroy(t->hw);
	free(t->cores);
	free(t->nodes);
	free(t);
}

unsigned sched_topo_ncores(const struct sched_topo *t)
{
	return t->ncores;
}

unsigned sched_topo_nnodes(const struct sched_topo *t)
{
	return t->nnodes;
}

int sched_topo_core_node(const struct sched_topo *t, unsigned core)
{
	if (core >= t->ncores)
		return -EINVAL;
	return (int)t->cores[core].node;
}

hwloc_const_cpuset_t sched_topo_core_cpuset(const struct sched_topo *t, unsigned core)
{
	if (core >= t->ncores)
		return NULL;
	return t->cores[core].obj->cpuset;
}

hwloc_const_nodeset_t sched_topo_node_nodeset(const struct sched_topo *t, unsigned node)
{
	if (node >= t->nnodes)
		return NULL;
	return t->nodes[node]->nodeset;
}

bool sched_topo_is_thissystem(const struct sched_topo *t)
{
	return hwloc_topology_is_thissystem(t->hw) != 0;
}

hwloc_topology_t sched_topo_hwloc(const struct sched_topo *t)
{
	return t->hw;
}

int sched_topo_place(const struct sched_topo *t, unsigned nworkers, struct sched_place *out, unsigned cap)
{
	unsigned *spread = NULL, *per_node = NULL, *seen = NULL;
	int rc;

	if (!t || !out)
		return -EINVAL;
	unsigned n = nworkers ? nworkers : t->ncores;
	if (n > SCHED_MAX_WORKERS)
		return -EINVAL;
	if (cap < n)
		return -ENOSPC;

	spread = malloc(t->ncores * sizeof(*spread));
	per_node = calloc(t->nnodes, sizeof(*per_node)); /* cores on each node, then slots dealt to it */
	seen = calloc(t->nnodes, sizeof(*seen));
	if (!spread || !per_node || !seen) {
		rc = -ENOMEM;
		goto out;
	}

	/* Spread order: round r takes the r-th core of every node that has one. Cores are visited in
	 * logical order, so "r-th core of a node" is its r-th in that order. */
	unsigned maxper = 0;
	for (unsigned c = 0; c < t->ncores; c++) {
		unsigned k = ++per_node[t->cores[c].node];
		if (k > maxper)
			maxper = k;
	}
	unsigned len = 0;
	for (unsigned r = 0; r < maxper; r++) {
		for (unsigned nd = 0; nd < t->nnodes; nd++) {
			unsigned k = 0;
			for (unsigned c = 0; c < t->ncores; c++) {
				if (t->cores[c].node != nd)
					continue;
				if (k++ == r) {
					spread[len++] = c;
					break;
				}
			}
		}
	}

	/* Deal, then group by node keeping deal order: a counting sort on the node of each slot. */
	memset(per_node, 0, t->nnodes * sizeof(*per_node));
	for (unsigned j = 0; j < n; j++)
		per_node[t->cores[spread[j % len]].node]++;
	unsigned at = 0;
	for (unsigned nd = 0; nd < t->nnodes; nd++) {
		seen[nd] = at; /* first worker index of node nd */
		at += per_node[nd];
	}
	for (unsigned j = 0; j < n; j++) {
		unsigned c = spread[j % len];
		unsigned nd = t->cores[c].node;
		out[seen[nd]++] = (struct sched_place){.core = c, .node = nd};
	}
	rc = (int)n;
out:
	free(spread);
	free(per_node);
	free(seen);
	return rc;
}
