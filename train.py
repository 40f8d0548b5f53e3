"""Train a masklet classifier (I-SAM2, I-<encoder>), then test its best checkpoint.

python train.py --config configs/train/isam2_tiny_synthetic.yaml
python train.py --config configs/train/isam2_vspw.yaml --ckpt_path runs/isam2/version_0/checkpoints/last.ckpt
"""

from callbacks import default_callbacks
from datamodules import VSPWDataModule
from vssam2.classifier import MaskletClassifier
from vssam2.cli import VSSCLI, train_main


def main(args: list[str] | None = None) -> VSSCLI:
    """Fits and tests on ``args`` (``sys.argv`` by default)."""
    return train_main(MaskletClassifier, VSPWDataModule, args=args, callbacks=default_callbacks())


if __name__ == "__main__":
    main()
