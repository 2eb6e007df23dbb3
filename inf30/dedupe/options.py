"""Options and counts of the dedupe stage: :class:`DedupeOptions` (defaults, CLI help, validation) and
:class:`DedupeSummary`."""

from __future__ import annotations

from dataclasses import dataclass

from inf30.distribute import Distributor, check_distributor
from inf30.errors import UsageError
from inf30.hashing import HASHES
from inf30.options import option
from inf30.scene import SceneParams

ORDER_KEYS = ("size", "entropy")


@dataclass
class DedupeOptions:
    """Options of :func:`dedupe_dataset` (defaults tuned on real infrared data, see docs/dedupe.md); each
    field's help is the CLI's (``inf30 dedupe``). ``scene_params`` holds the ORB feature and verification
    parameters (:class:`inf30.scene.SceneParams`, each one a CLI option of its own too)."""

    hashes: tuple[str, ...] = option(("phash",), "Stage 2 hashes, comma-separated (phash, dhash, whash, ahash); "
                                     "several are concatenated.")
    hash_threshold: int = option(8, "Stage 2: max Hamming distance per 64-bit hash (k hashes: k times it).")
    copy_corr: float = option(0.8, "Stage 2: a hash near-copy is a link only if the two thumbnails (64 x 64, blurred) "
                                    "correlate to at least this; otherwise stage 3 verifies the pair (nearly flat skies "
                                    "collide in pHash; needs stage 3's thumbnails; 0 = off).")
    scene: bool = option(True, "Run stage 3 (scene-level near-duplicates: ORB + RANSAC).")
    scene_params: SceneParams = option(help="ORB feature and verification parameters.", factory=SceneParams)
    neighbors: int = option(5, "Stage 3 candidates per image: its nearest images by whole-image descriptor.")
    votes: int = option(5, "Stage 3 candidates per image: the images whose local descriptors are most often "
                            "nearest to its own (finds its crops and its source frame; 0 = off).")
    vote_keypoints: int = option(128, "Stage 3: descriptors per image (the strongest) that vote.")
    vote_index_keypoints: int = option(0, "Stage 3: descriptors per image (the strongest) that are voted for, if more "
                                          "than vote-keypoints (finds more crops; the vote index grows with it).")
    window: int = option(5, "Stage 3 candidates per image: the next N images in source order (item key: "
                            "folder, file name, video time; 0 = off).")
    expand: int = option(16, "Stage 3 query expansion, last: an image is also paired with "
                             "the images linked to its links, and with their candidates among its N best vote "
                             "matches (either way; finds a crop whose frame is only reached through a neighbouring "
                             "frame; pairs already in one group are not verified; 0 = off).")
    lone_pairs: int = option(20, "Stage 3: an image no link puts in a group is also tested against up to N images of the "
                                "groups of its candidates: their anchor and strong neighbours (0 = off; such links are weak).")
    lone_crops: int = option(64, "Stage 3: the crop search (--crop-corr) of a lone image tries up to N of its grouped "
                                 "candidates and their groups' anchors, the most similar first (0 = off).")
    min_similarity: float = option(0.3, "Stage 3: index candidates below this cosine similarity are not verified.")
    hops: int = option(0, "Groups: an anchor takes the images within N strong links (0 = the whole connected "
                          "component, verified lazily; N > 0: every candidate is verified).")
    vocab_size: int = option(256, "Stage 3: visual words of the whole-image descriptor (trained on the dataset).")
    order: tuple[str, ...] = option(("size", "entropy"), "Anchor order keys, each descending, comma-separated "
                                    "(size = pixels, entropy); ties by id.")
    workers: int = option(0, "Processes for features and verification (0 = all cores); never changes the result.")
    distributor: str = option("local", "Where features and verification run: local (processes) or ray (a Ray cluster).")
    ray_address: str | None = option(None, "Ray cluster to join (HEAD:6379, or auto on a cluster node); default: a local Ray for the run. Needs --distributor ray.")
    sheet_groups: int = option(8, "Groups shown in dedupe/groups.png (largest first).")

    def validate(self) -> None:
        for h in self.hashes:
            if h not in HASHES:
                raise UsageError(f"unknown hash {h!r}; choose from {', '.join(HASHES)}")
        if not self.hashes:
            raise UsageError("give at least one hash for stage 2")
        for k in self.order:
            if k not in ORDER_KEYS:
                raise UsageError(f"unknown order key {k!r}; choose from {', '.join(ORDER_KEYS)}")
        if not 0 <= self.hash_threshold <= 64:
            raise UsageError(f"hash threshold must be in 0..64, got {self.hash_threshold}")
        if not 0.0 <= self.copy_corr <= 1.0:
            raise UsageError(f"copy corr must be in 0..1 (0 = off), got {self.copy_corr}")
        if self.neighbors < 1:
            raise UsageError("neighbors must be at least 1")
        if self.hops < 0:
            raise UsageError(f"hops must be 0 (connected components) or more, got {self.hops}")
        if self.votes < 0:
            raise UsageError("votes must be 0 (off) or more")
        if not 1 <= self.vote_keypoints <= 10_000:
            raise UsageError(f"vote keypoints must be in 1..10000, got {self.vote_keypoints}")
        if not 0 <= self.vote_index_keypoints <= 10_000:
            raise UsageError(f"vote index keypoints must be in 0..10000, got {self.vote_index_keypoints}")
        if self.expand < 0:
            raise UsageError("expand must be 0 (off) or more")
        if self.window < 0:
            raise UsageError("window must be 0 (off) or more")
        if self.lone_pairs < 0:
            raise UsageError("lone pairs must be 0 (off) or more")
        if self.lone_crops < 0:
            raise UsageError("lone crops must be 0 (off) or more")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"min similarity is a cosine in -1..1, got {self.min_similarity}")
        if not 1 <= self.vocab_size <= 65536:
            raise UsageError(f"vocab size must be in 1..65536, got {self.vocab_size}")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 (all cores) or more, got {self.workers}")
        if self.sheet_groups < 0:
            raise UsageError(f"sheet groups must be 0 or more, got {self.sheet_groups}")
        check_distributor(self.distributor, self.ray_address)
        self.scene_params.validate()

    def distributor_for(self, **kw) -> Distributor:
        """A :class:`~inf30.distribute.Distributor` of this run's backend and workers (its workers come from a
        fork server, so they never inherit faiss/OpenMP threads of this process, which can deadlock a fork)."""
        return Distributor(backend=self.distributor, workers=self.workers, ray_address=self.ray_address,
                           preload=("inf30.dedupe",), **kw)


@dataclass
class DedupeSummary:
    """Counts of one dedupe run."""

    considered: int = 0
    near_copies: int = 0
    near_duplicates: int = 0
    kept: int = 0
    groups: int = 0
    no_scene_features: int = 0
    unreadable: int = 0
    copies_unconfirmed: int = 0  # stage 2 pairs whose thumbnails disagree (--copy-corr), verified in stage 3 instead
    candidate_pairs: int = 0
    checked_pairs: int = 0
    expanded_pairs: int = 0  # of the candidate pairs, those query expansion added (--expand)
    photo_pairs: int = 0  # pairs given the photometric test (where the ORB test failed)
    photo_retests: int = 0  # of them, pairs tested again in a second round (groups limited in hops)
    lone_checked: int = 0  # pairs of a lone image and a group member of one of its candidates (--lone-pairs),
    # verified with both tests besides the checked candidates
    crop_searched: int = 0  # pairs of a lone image and a grouped candidate or anchor given the crop search
    crop_linked: int = 0  # lone images the crop search put in a group
    verified_pairs: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        rows = [
            ("images considered (kept before dedupe)", self.considered),
            ("dropped, stage 2 near-copy (hash)", self.near_copies),
            ("dropped, stage 3 near-duplicate (scene)", self.near_duplicates),
            ("kept", self.kept),
            ("groups (anchors with members)", self.groups),
            ("images without scene features (stage 2 only)", self.no_scene_features),
            ("unreadable images (skipped)", self.unreadable),
            ("stage 2 pairs the thumbnails did not confirm (verified in stage 3)", self.copies_unconfirmed),
            ("stage 3 candidate pairs / checked / duplicates",
             f"{self.candidate_pairs} / {self.checked_pairs} / {self.verified_pairs}"),
            ("stage 3 candidate pairs added by query expansion", self.expanded_pairs),
            ("stage 3 pairs also given the photometric test (in round 2)",
             f"{self.photo_pairs} ({self.photo_retests})"),
            ("stage 3 pairs of a lone image and its candidates' groups", self.lone_checked),
            ("stage 3 crop search: pairs / lone images linked", f"{self.crop_searched} / {self.crop_linked}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{w}}  {value}" for name, value in rows)
