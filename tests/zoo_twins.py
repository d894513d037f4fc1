"""PyTorch twins of the zoo networks (benchmarks/zoo/): the same layers under the same names, so that
`model.load_state_dict(twin.state_dict())` works. Inputs are made as for the examples (twins.example_inputs).

ResNet18 is torchvision's resnet18 as the CIFAR variant builds it (3x3 stem, no max pooling), written out
here because torchvision is not a dependency; its state_dict keys are torchvision's (`layer2.0.downsample.0`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ZOO_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "zoo"


class MLP40(nn.Module):
    def __init__(self):
        super().__init__()
        for i in range(1, 41):
            setattr(self, f"fc{i}", nn.Linear(256, 256))

    def forward(self, x, target):
        for i in range(1, 40):
            x = F.relu(getattr(self, f"fc{i}")(x))
        out = self.fc40(x)
        return {"out": out, "loss": F.mse_loss(out, target)}


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn, plus the shortcut (identity, or `downsample`), relu."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet8(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.blocks = nn.Sequential(*(BasicBlock(32, 32) for _ in range(8)))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 10)

    def forward(self, x, labels):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        logits = self.fc(torch.flatten(self.pool(x), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class ResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        widths = [64, 128, 256, 512]
        for stage, width in enumerate(widths, start=1):
            cin, stride = (64, 1) if stage == 1 else (widths[stage - 2], 2)
            blocks = nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width))
            setattr(self, f"layer{stage}", blocks)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(512, num_classes)

    def forward(self, x, labels):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits = self.fc(torch.flatten(self.avgpool(x), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class Conv1dWide(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(8, 64, 7, padding=3, bias=False), nn.BatchNorm1d(64)
        self.conv2, self.bn2 = nn.Conv1d(64, 64, 5, padding=2, bias=False), nn.BatchNorm1d(64)
        self.conv3, self.bn3 = nn.Conv1d(64, 128, 5, padding=2, bias=False), nn.BatchNorm1d(128)
        self.conv4, self.bn4 = nn.Conv1d(128, 128, 3, padding=1, bias=False), nn.BatchNorm1d(128)
        self.conv5 = nn.Conv1d(128, 128, 3, padding=2, dilation=2)
        self.pool, self.fc = nn.AdaptiveAvgPool1d(1), nn.Linear(128, 10)

    def forward(self, x, labels):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool1d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool1d(F.relu(self.bn4(self.conv4(x))), 2)
        logits = self.fc(torch.flatten(self.pool(F.relu(self.conv5(x))), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class Conv3dWide(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(1, 16, 3, padding=1, bias=False), nn.BatchNorm3d(16)
        self.conv2, self.bn2 = nn.Conv3d(16, 16, 3, padding=1, bias=False), nn.BatchNorm3d(16)
        self.conv3, self.bn3 = nn.Conv3d(16, 32, 3, padding=1, bias=False), nn.BatchNorm3d(32)
        self.conv4 = nn.Conv3d(32, 32, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool3d(1), nn.Linear(32, 3)

    def forward(self, x, target):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool3d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        out = self.fc(torch.flatten(self.pool(F.relu(self.conv4(x))), 1))
        return {"out": out, "loss": F.mse_loss(out, target)}


# zoo file -> (twin class, its inputs as twins.EXAMPLES gives them: float inputs by their shape after the
# batch, labels by class count)
ZOO = {
    "mlp40.net": (MLP40, {"x": (256,), "target": (256,)}),
    "resnet8.net": (ResNet8, {"x": (3, 32, 32), "labels": 10}),
    "resnet18_cifar.net": (ResNet18, {"x": (3, 32, 32), "labels": 10}),
    "conv1d_wide.net": (Conv1dWide, {"x": (8, 1024), "labels": 10}),
    "conv3d_wide.net": (Conv3dWide, {"x": (1, 16, 16, 16), "target": (3,)}),
}
