"""Train a masklet classifier (I-SAM2, I-<encoder>) or a learned refinement rule, then test its best checkpoint.

python train.py --config configs/train/isam2_tiny_synthetic.yaml
python train.py --config configs/train/fusion_superpixel_synthetic.yaml
python train.py --config configs/train/isam2_vspw.yaml --ckpt_path runs/isam2/version_0/checkpoints/last.ckpt
"""

from callbacks import default_callbacks
from datamodules import VSPWDataModule
from vssam2.cli import VSSCLI, train_main
from vssam2.replay import PredictionReplay


def main(args: list[str] | None = None) -> VSSCLI:
    """Fits and tests on ``args`` (``sys.argv`` by default)."""
    return train_main(PredictionReplay, VSPWDataModule, args=args, callbacks=default_callbacks())


if __name__ == "__main__":
    main()
