"""Near-duplicate removal: stage 2 near-copies by perceptual hash, stage 3 scene-level
near-duplicates (crops, shifts, video frames, curation crops) by ORB features, grouped along the verified
links with anchors chosen in a deterministic order (paper section 3.1).

Stage 1 (exact duplicates by pixel hash) happens in the build. This module:

- reads ``DIR/manifest.parquet``, resets its own earlier drops (so re-running is idempotent) and works on the
  kept rows;
- decodes each kept image once to compute its scene features (and any perceptual hash the manifest lacks),
  cached under ``DIR/dedupe/cache/`` in chunk files keyed by image id (resumable, mergeable across shards);
- stage 2: faiss binary index, range search under a Hamming threshold on the concatenated hash codes;
- stage 3 candidates: k nearest images by a bag-of-visual-words descriptor (faiss), images with most
  local-descriptor votes (faiss binary index: finds crops and their frames) and neighbours in source order;
  each candidate pair is verified geometrically (:func:`inf30.scene.verify_pair`), lazily when groups are
  whole connected components (pairs already in one group are skipped);
- groups: images visited in order (larger, then higher entropy, then id); an image not yet in a group becomes
  an anchor and takes every image within ``hops`` stage 2 or stage 3 links (0: its connected component);
- writes the manifest atomically (``status``/``reason`` and ``dup_stage``, ``dup_anchor``, ``dup_evidence``),
  ``DIR/dedupe/groups.parquet`` and the contact sheet ``DIR/dedupe/groups.png``.

The result depends only on the set of images, the options and the order rule, never on the worker count or
the manifest's row order.

Modules, one concern each: :mod:`~inf30.dedupe.options` (:class:`DedupeOptions`, :class:`DedupeSummary`),
:mod:`~inf30.dedupe.hashes` (stage 2), :mod:`~inf30.dedupe.candidates` (stage 3 candidate pairs),
:mod:`~inf30.dedupe.verify` (stage 3 verification, lazy), :mod:`~inf30.dedupe.edges` (the verified graph),
:mod:`~inf30.dedupe.anchors` (groups), :mod:`~inf30.dedupe.cache` (the feature cache),
:mod:`~inf30.dedupe.outputs` (drop marks, contact sheet), :mod:`~inf30.dedupe.core` (:func:`dedupe_dataset`).
This package re-exports their public names.
"""

from __future__ import annotations

from inf30.dedupe.anchors import anchor_rank, assign_anchors, group_arrays, resolve_leaf_links
from inf30.dedupe.cache import (
    CACHE_DIR,
    CHUNK,
    DEDUPE_DIR,
    FeatureCache,
    compute_features,
    merge_caches,
    read_gray,
)
from inf30.dedupe.candidates import (
    FLOAT_FLAT_LIMIT,
    VOTE_FLAT_LIMIT,
    candidate_pairs,
    float_index,
    global_descriptors,
    scene_candidates,
    vote_pairs,
    window_pairs,
)
from inf30.dedupe.core import OWN_REASONS, dedupe_dataset
from inf30.dedupe.crops import locate_crop, search_crops
from inf30.dedupe.edges import find_edges, lone_pairs
from inf30.dedupe.hashes import FLAT_LIMIT, binary_index, hex_to_codes, near_copy_pairs
from inf30.dedupe.options import ORDER_KEYS, DedupeOptions, DedupeSummary
from inf30.dedupe.outputs import contact_sheet, mark_dropped
from inf30.dedupe.verify import LAZY_BATCH, UnionFind, strong_links, verify_candidates, verify_lazily

__all__ = [
    "CACHE_DIR", "CHUNK", "DEDUPE_DIR", "FLAT_LIMIT", "FLOAT_FLAT_LIMIT", "LAZY_BATCH", "ORDER_KEYS", "OWN_REASONS",
    "VOTE_FLAT_LIMIT", "DedupeOptions", "DedupeSummary", "FeatureCache", "UnionFind", "anchor_rank", "assign_anchors", "group_arrays", "locate_crop", "lone_pairs", "search_crops", "resolve_leaf_links",
    "binary_index", "candidate_pairs", "compute_features", "contact_sheet", "dedupe_dataset", "find_edges",
    "float_index", "global_descriptors", "hex_to_codes", "mark_dropped", "merge_caches", "near_copy_pairs",
    "read_gray", "scene_candidates", "strong_links", "verify_candidates", "verify_lazily", "vote_pairs", "window_pairs",
]
