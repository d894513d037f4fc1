"""PyTorch twins of the example networks: the same layers under the same names, so state dicts line up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x, target):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        out = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return {"out": out, "loss": F.mse_loss(out, target)}


class TwoLayerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(1000, 100), nn.Linear(100, 10)

    def forward(self, x, y):
        y_pred = self.linear2(F.relu(self.linear1(x)))
        return {"y_pred": y_pred, "loss": F.mse_loss(y_pred, y, reduction="sum")}


class CifarNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x, labels):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        logits = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.dbn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.dbn(self.down(x)))


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1, self.layer2 = BasicBlock(8, 16, stride=2), BasicBlock(16, 32, stride=2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 10)

    def forward(self, x, labels):
        x = self.layer2(self.layer1(F.relu(self.bn(self.conv(x)))))
        logits = self.fc(torch.flatten(self.pool(x), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class Signal1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.conv2, self.pool, self.fc = nn.Conv1d(8, 16, 3, dilation=2), nn.AdaptiveAvgPool1d(1), nn.Linear(16, 4)

    def forward(self, x, labels):
        x = F.max_pool1d(F.relu(self.bn1(self.conv1(x))), 2)
        logits = self.fc(torch.flatten(self.pool(F.relu(self.conv2(x))), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class Volume3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv3d(1, 4, 3, padding=1), nn.Conv3d(4, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2 * 2, 3)

    def forward(self, x, target):
        x = torch.tanh(self.conv2(F.max_pool3d(F.relu(self.conv1(x)), 2)))
        out = self.fc(torch.flatten(x, 1))
        return {"out": out, "loss": F.mse_loss(out, target)}


class DigitsMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)

    def forward(self, x, labels):
        logits = self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x, labels):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        logits = self.fc(torch.flatten(F.max_pool2d(x, 2), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class DigitsLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(8, 64, batch_first=True), nn.Linear(64, 10)

    def forward(self, x, labels):
        _, (h_n, _) = self.lstm(torch.flatten(x, 1, 2))
        logits = self.fc(torch.flatten(h_n.transpose(0, 1), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


# examples/digits/: trained on real data by tests/test_digits.py rather than on random inputs
DIGITS = {"mlp.net": DigitsMLP, "cnn.net": DigitsCNN, "lstm.net": DigitsLSTM}


# example file -> (twin class, its inputs: a float input by its shape after the batch, labels by class count)
EXAMPLES = {
    "lenet.net": (LeNet, {"x": (1, 32, 32), "target": (10,)}),
    "two_layer.net": (TwoLayerNet, {"x": (1000,), "y": (10,)}),
    "cifar_net.net": (CifarNet, {"x": (3, 32, 32), "labels": 10}),
    "resnet_tiny.net": (ResNetTiny, {"x": (3, 16, 16), "labels": 10}),
    "signal1d.net": (Signal1d, {"x": (2, 64), "labels": 4}),
    "volume3d.net": (Volume3d, {"x": (1, 8, 8, 8), "target": (3,)}),
}


def torch_peak_bytes(twin, tensors: dict, optimizer) -> int:
    """PyTorch's tensor memory at the peak of one training step (gradients freed before it, as set_to_none
    leaves them): the bytes live before the step plus the step's own allocation high-water mark, read from
    the profiler's allocation events (PyTorch counts no peak on the CPU). Run a step first: the optimiser's
    state exists from then on."""
    optimizer.zero_grad(set_to_none=True)
    live = [*twin.parameters(), *twin.buffers(), *tensors.values()]
    live += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in live}
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        twin(**tensors)["loss"].backward()
        optimizer.step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = high = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()  # negative for a free
        high = max(high, current)
    return sum(storages.values()) + high


def example_inputs(spec: dict, batch: int, rng) -> dict:
    """Random inputs for an example: standard normal floats, labels uniform over the classes."""
    return {name: rng.integers(0, kind, size=(batch,)) if isinstance(kind, int)
            else rng.standard_normal((batch, *kind)).astype("float32") for name, kind in spec.items()}


def assert_matches_twin(twin, inputs: dict, gradients: dict, forward) -> None:
    """A netc model's loss and parameter gradients (`gradients`, NumPy) against `twin`'s on the same `inputs`:
    the loss to rtol 1e-5, each gradient to 1e-4 of its own scale (or of the largest's, for one near zero).
    Then `forward()`, the model's outputs from a forward pass run after that, against the twin's."""
    import numpy as np

    out = twin(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    out["loss"].backward()
    np.testing.assert_allclose(gradients["loss"], out["loss"].item(), rtol=1e-5)
    expected = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    largest = max(np.abs(v).max() for v in expected.values())
    for key, value in expected.items():
        assert np.abs(gradients[key] - value).max() <= 1e-4 * max(np.abs(value).max(), 1e-3 * largest), key
    outputs = forward()
    for key in outputs:
        np.testing.assert_allclose(outputs[key], out[key].detach().numpy(), rtol=1e-4, atol=1e-6)
