"""Train a masklet classifier (I-SAM2, I-<encoder>), then test its best checkpoint.

    python train.py --config configs/train/isam2_synthetic.yaml
    python train.py --config configs/train/isam2_vspw.yaml --ckpt_path runs/isam2/version_0/checkpoints/last.ckpt
"""

from datamodules import VSPWDataModule
from vssam2.cli import train_main
from vssam2.classifier import MaskletClassifier

if __name__ == "__main__":
    train_main(MaskletClassifier, VSPWDataModule)
