"""LeNet-5 with BatchNorm: the smallest model srq ships, for MNIST-sized data and quick runs.

Every layer is a named submodule (ReLUs included, never ``F.relu``) so that quantizer
surgery can walk ``named_modules()`` and see exactly which activation feeds each layer.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5-style CNN: two conv/BN/ReLU/pool stages and three fully connected layers.

    ``padding=2`` on the first conv keeps 28x28 inputs at the classic 5x5x16 feature map;
    the adaptive pool then makes any input of at least 16x16 (e.g. 32x32 CIFAR) fit ``fc1``.
    Convolutions have no bias because the BatchNorm that follows would cancel it.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d((5, 5))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.flatten(self.avgpool(x))
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)
