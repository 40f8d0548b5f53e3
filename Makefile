# Two commands set up and run everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_SILENT := true

.PHONY: venv demo test test-slow lint benchmark clean

venv: $(STAMP)

# torch/torchvision first (pip takes them from the local wheel cache where present); sam2
# then builds from source against that torch, without its CUDA extension; our own install
# compiles the label-map kernels (vssam2/_label_kernels.c, needs a C compiler), and runs again
# when that source changes.
$(STAMP): pyproject.toml setup.py vssam2/_label_kernels.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation sam2==1.1.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# configs/evaluate/synthetic*.yaml and configs/masklets/*_synthetic.yaml read demo_run/data;
# masklets are cached under demo_run/cache/masklets (a second run reuses them); the demo ends
# with the Table 3 classifiers (I-SAM2, I-MiT and I-CLIP-MLP from the feature cache in
# demo_run/cache/features, I-SAM2-LoRA trained online, I-SAM3 and zero-shot I-CLIP untrained)
# joined into demo_run/table3.md, and a learned refinement rule trained from the refinement
# statistics (demo_run/cache/fusion).
# Each stage prints its title, its table and where its files went.
STAGE = @printf '\n==> %s\n' 
demo: $(STAMP)
	$(STAGE)"[1/21] Synthetic VSPW / VIPSeg dataset and four simulated models (demo_run/data)"
	@$(PY) -m vssam2.synthetic --root demo_run/data --seed 0
	$(STAGE)"[2/21] Score the simulated models on the VSPW layout (Table 1 metrics)"
	@$(PY) evaluate.py test --config configs/evaluate/synthetic.yaml
	$(STAGE)"[3/21] The same videos in the VIPSeg layout (identical numbers expected)"
	@$(PY) evaluate.py test --config configs/evaluate/synthetic_vipseg.yaml
	$(STAGE)"[4/21] Masklet cache, val split: GT oracle"
	@$(PY) -m vssam2.masklets --config configs/masklets/oracle_synthetic.yaml
	$(STAGE)"[5/21] Masklet cache, val split: SLIC superpixels"
	@$(PY) -m vssam2.masklets --config configs/masklets/superpixel_synthetic.yaml
	$(STAGE)"[6/21] Masklet cache, val split: SAM2 (tiny random-weight model: exercises the pipeline, masks are meaningless)"
	@$(PY) -m vssam2.masklets --config configs/masklets/sam2_tiny_synthetic.yaml
	$(STAGE)"[7/21] Masklet cache, val split: SAM 3 text-prompted by the 34 class names (tiny random-weight model written in transformers' format; masks and classes are meaningless)"
	@$(PY) -m vssam2.masklets.sam3_tiny --write-tiny demo_run/checkpoints/sam3_tiny
	@$(PY) -m vssam2.masklets --config configs/masklets/sam3_tiny_synthetic.yaml
	$(STAGE)"[8/21] Refinement with oracle masklets: base and refined rows side by side"
	@$(PY) evaluate.py test --config configs/evaluate/synthetic.yaml --config configs/evaluate/refine_synthetic.yaml
	$(STAGE)"[9/21] Masklet-source sweep: oracle vs superpixels vs SAM2 vs SAM 3 (a Lightning run; table, JSON, plot, W&B group)"
	@$(PY) evaluate.py test --config configs/ablation/sources_synthetic.yaml
	$(STAGE)"[10/21] Refinement-rule sweep: the vote's min_share on superpixel masklets (every point reads one cache)"
	@$(PY) evaluate.py test --config configs/ablation/min_share_synthetic.yaml
	$(STAGE)"[11/21] Masklet cache, train split: superpixels (for the classifier)"
	@$(PY) -m vssam2.masklets --config configs/masklets/superpixel_synthetic.yaml --split train
	$(STAGE)"[12/21] Feature cache of the tiny SAM2 encoder (train and val)"
	@$(PY) -m vssam2.features --config configs/features/isam2_tiny_synthetic.yaml
	$(STAGE)"[13/21] Train I-SAM2 from the feature cache, then test it next to the base model (Table 3 rows)"
	@$(PY) train.py --config configs/train/isam2_tiny_synthetic.yaml
	$(STAGE)"[14/21] I-MiT: the same head on a random-weight MiT-B0 (the study's I-CFFM encoder), from its feature cache"
	@$(PY) -m vssam2.features --config configs/features/imit_b0_synthetic.yaml
	@$(PY) train.py --config configs/train/imit_b0_synthetic.yaml
	$(STAGE)"[15/21] I-SAM2-LoRA: a short fit (3 epochs of 24 clips) of LoRA adapters on the tiny SAM2 trunk's attention with the head, online on training clips (no feature cache: the adapters change the features)"
	@$(PY) train.py --config configs/train/isam2_lora_synthetic.yaml
	$(STAGE)"[16/21] I-SAM3: SAM 3's masklets painted with their prompts' classes, no training"
	@$(PY) evaluate.py test --config configs/evaluate/synthetic.yaml --config configs/evaluate/isam3_synthetic.yaml
	$(STAGE)"[17/21] I-CLIP: superpixel masklets named zero-shot by a tiny random-weight CLIP (dense patch features vs class-name embeddings)"
	@$(PY) -m vssam2.encoders.clip_tiny --write-tiny demo_run/checkpoints/clip_tiny
	@$(PY) evaluate.py test --config configs/evaluate/synthetic.yaml --config configs/evaluate/iclip_synthetic.yaml
	$(STAGE)"[18/21] I-CLIP-MLP: the head on the CLIP features (feature cache, train.py); Table 3 joins every classifier row with the base models"
	@$(PY) -m vssam2.features --config configs/features/iclip_tiny_synthetic.yaml
	@$(PY) train.py --config configs/train/iclip_tiny_synthetic.yaml
	@$(PY) -m vssam2.tables demo_run/runs/synthetic_eval demo_run/runs/isam2_synthetic demo_run/runs/isam2_lora_synthetic demo_run/runs/imit_b0_synthetic demo_run/runs/synthetic_iclip demo_run/runs/iclip_synthetic demo_run/runs/synthetic_isam3 --out demo_run/table3.md --json demo_run/table3.json
	$(STAGE)"[19/21] Refinement statistics of the simulated models on superpixel masklets (train and val), for learned rules"
	@$(PY) -m vssam2.fusion --config configs/fusion/superpixel_synthetic.yaml
	$(STAGE)"[20/21] Train the learned refinement rule of sim_strong from the statistics (seconds), test it beside the vote"
	@$(PY) train.py --config configs/train/fusion_superpixel_synthetic.yaml
	$(STAGE)"[21/21] Refinement rules side by side: vote, quality gate, learned (for sim_strong the vote hurts; its learned rule keeps the base)"
	@$(PY) evaluate.py test --config configs/evaluate/synthetic.yaml --config configs/evaluate/refine_rules_synthetic.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# ruff as configured in pyproject.toml; the suite runs the same checks (tests/test_lint.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: $(STAMP)
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf demo_run runs wandb lightning_logs
