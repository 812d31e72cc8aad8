"""Device mesh and logical-axis sharding from the config: mesh axes ('data', 'fsdp', 'tensor').

The config's `mesh` maps each axis to a size (-1: the devices left over); its `sharding_rules` is the one
table of (logical axis name, mesh axes) pairs that turns the names the layers give their params
(`dex_jax.nn.layers`: 'conv_in', 'conv_out', 'embed', 'mlp', 'norm', ...) into mesh placements. A param
dimension that does not divide over its mesh axes stays replicated, so one rule table serves every model size.
Batches are split over data x fsdp.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config, device_count):
    """{'data': d, 'fsdp': f, 'tensor': t} with at most one -1 -> the (d, f, t) that uses every device."""
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh axes must be {MESH_AXES}, got unknown {sorted(unknown)}")
    sizes = [int(mesh_config.get(name, 1)) for name in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if device_count % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {device_count} devices")
        sizes[sizes.index(-1)] = device_count // known
    if math.prod(sizes) != device_count:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"there are {device_count}")
    return tuple(sizes)


def make_mesh(mesh_config):
    """The ('data', 'fsdp', 'tensor') mesh over every device of every process."""
    shape = mesh_shape(mesh_config, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_rules(rules_config):
    """The config's rule table as flax wants it: a tuple of (logical name, mesh axis | tuple | None)."""
    rules = []
    for name, axes in rules_config:
        targets = axes if isinstance(axes, (tuple, list)) else (axes,)
        bad = [a for a in targets if a is not None and a not in MESH_AXES]
        if bad:
            raise ValueError(f"sharding rule {name!r} names unknown mesh axes {bad}; the axes are {MESH_AXES}")
        rules.append((name, tuple(axes) if isinstance(axes, (tuple, list)) else axes))
    return tuple(rules)


def _axis_size(mesh, axes):
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))


def divisible_spec(mesh, spec, shape):
    """`spec` with every entry whose mesh size does not divide its dimension replaced by None (replicated)."""
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    return PartitionSpec(*(a if dim % _axis_size(mesh, a) == 0 else None for a, dim in zip(entries, shape)))


def state_shardings(abstract_boxed, mesh, rules):
    """Boxed abstract state (from `jax.eval_shape` of an init) -> NamedShardings for its unboxed form.

    Leaves boxed with logical names (nn.Partitioned) are placed by `rules`; everything else is replicated.
    """
    logical = nn.get_partition_spec(abstract_boxed)
    shapes = nn.unbox(abstract_boxed)

    def place(spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if len(spec) else PartitionSpec()
        return NamedSharding(mesh, divisible_spec(mesh, mesh_spec, leaf.shape))

    return jax.tree.map(place, logical, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh):
    """The sharding that puts a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh):
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch_divides(batch_size, mesh):
    """Raise ValueError unless the global batch splits evenly over data x fsdp and over the processes."""
    shards = _axis_size(mesh, BATCH_AXES)
    if batch_size % shards:
        raise ValueError(f"batch size {batch_size} does not divide over the mesh's data x fsdp = "
                         f"{mesh.shape['data']} x {mesh.shape['fsdp']} = {shards} batch shards")
    if batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} does not divide over {jax.process_count()} processes")


def global_batch(local_batch, mesh):
    """This process's slice of a batch (dict of numpy arrays) -> global jax.Arrays split over data x fsdp."""
    sharding = batch_sharding(mesh)
    count = jax.process_count()

    def to_global(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * count,) + x.shape[1:])

    return jax.tree.map(to_global, local_batch)
