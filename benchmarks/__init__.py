"""Speed benchmarks of explore (issues 5 and 12): ``python -m benchmarks [--quick] [--only NAME]``.

Every figure is a ratio of two code paths timed side by side in the same run, with
medians over repeats, because the machines they run on are small and shared.

* ``repeats``   — AlphaNet's R seeds as one batched model vs R sequential runs.
* ``recompute`` — reusing base logits Z = F Wᵀ vs recomputing logits from features.
* ``store``     — feature-store reads vs raw ``pyarrow.fs`` reads (local disk, S3 via moto).
* ``scale``     — ImageNet-LT-sized AlphaNet, 10 seeds: phases, peak memory, growth in C and k.
* ``heads``     — SWRM, DySWRM, neighbor silencing and LFM heads: seconds per epoch per seed
  against the same epoch's matrix products run alone.

Results and the commands that produced them are in BENCHMARKS.md.
"""
