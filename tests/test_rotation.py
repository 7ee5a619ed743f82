import numpy as np
import pytest
import torch

from rotviz.data.rotation import denormalize, normalize, parse_rotations, rotation_batch
from rotviz.errors import RotvizError


def test_label_k_is_k_quarter_turns_counter_clockwise_like_numpy(real_images):
    images = torch.from_numpy(real_images[:2])
    x, y = rotation_batch(images, (0, 1, 2, 3))
    assert x.shape == (8, 3, 128, 128)
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    for i in range(8):
        expected = np.rot90(real_images[i // 4], k=int(y[i]), axes=(1, 2))
        assert np.array_equal(x[i].numpy(), expected)


def test_counter_clockwise_moves_top_right_corner_to_top_left():
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 3] = 1  # top-right
    x, _ = rotation_batch(img, (1, 0))
    assert x[0, 0, 0, 0] == 1  # 90 degrees counter-clockwise: top-right -> top-left


def test_subset_maps_to_labels_in_given_order(real_images):
    x, y = rotation_batch(torch.from_numpy(real_images[:1]), (2, 0))
    assert y.tolist() == [0, 1]
    assert np.array_equal(x[0].numpy(), np.rot90(real_images[0], 2, axes=(1, 2)))
    assert np.array_equal(x[1].numpy(), real_images[0])


def test_non_square_images_are_refused():
    with pytest.raises(RotvizError, match="square"):
        rotation_batch(torch.zeros(1, 3, 8, 10))


@pytest.mark.parametrize(
    ("text", "expected"), [("0,90,180,270", (0, 1, 2, 3)), ("0,180", (0, 2)), ("270, 0", (3, 0))]
)
def test_parse_rotations(text, expected):
    assert parse_rotations(text) == expected


@pytest.mark.parametrize("text", ["0,45", "0", "0,0", "a,b"])
def test_parse_rotations_rejects_bad_input(text):
    with pytest.raises(RotvizError):
        parse_rotations(text)


def test_normalize_round_trip(real_images):
    x = torch.from_numpy(real_images[:2])
    z = normalize(x)
    assert abs(float(z.mean())) < 1.5
    assert torch.allclose(denormalize(z) * 255, x.float(), atol=1e-3)
