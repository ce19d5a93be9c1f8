"""Masks as people make them: palette, greyscale and 16-bit index masks by value, binary masks,
colour masks (one id per colour), and truthful errors for masks without objects."""
import cv2
import numpy as np
import pytest
from PIL import Image

import segment_video
from util.errors import UserInputError, run_main
from util.image_io import check_has_object, read_binary_mask, read_label_mask
from util.palette import DAVIS_PALETTE

IDS = np.array([[0, 1, 1, 2],
                [0, 0, 2, 2]], np.uint8)


def save_palette_png(path, labels):
    img = Image.fromarray(labels.astype(np.uint8), mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)
    return path


def test_greyscale_index_mask_from_cv2_is_read_by_value(tmp_path):
    path = tmp_path / 'grey.png'
    cv2.imwrite(str(path), IDS)
    assert Image.open(path).mode == 'L'
    labels, palette = read_label_mask(path)
    np.testing.assert_array_equal(labels, IDS)
    assert palette is None


def test_16_bit_index_mask_is_read_by_value(tmp_path):
    path = tmp_path / 'deep.png'
    cv2.imwrite(str(path), IDS.astype(np.uint16))
    assert Image.open(path).mode.startswith('I')
    np.testing.assert_array_equal(read_label_mask(path)[0], IDS)


@pytest.mark.parametrize('dtype, white', [(np.uint8, 255), (np.uint16, 65535)])
def test_binary_mask_is_one_object(tmp_path, dtype, white):
    path = tmp_path / 'binary.png'
    cv2.imwrite(str(path), (IDS > 0).astype(dtype) * white)
    np.testing.assert_array_equal(read_label_mask(path)[0], (IDS > 0).astype(np.uint8))


def test_one_bit_mask_is_one_object(tmp_path):
    path = tmp_path / 'bits.png'
    Image.fromarray(IDS > 0).save(path)
    assert Image.open(path).mode == '1'
    np.testing.assert_array_equal(read_label_mask(path)[0], (IDS > 0).astype(np.uint8))


def test_palette_mask_keeps_its_ids_and_palette(tmp_path):
    labels, palette = read_label_mask(save_palette_png(tmp_path / 'p.png', IDS * 3))
    np.testing.assert_array_equal(labels, IDS * 3)
    np.testing.assert_array_equal(palette, DAVIS_PALETTE)


def test_16_bit_id_above_255_is_an_error(tmp_path):
    path = tmp_path / 'big.png'
    cv2.imwrite(str(path), (IDS.astype(np.uint16) * 300))
    with pytest.raises(UserInputError) as e:
        read_label_mask(path)
    assert str(e.value) == f'{path}: label id 600 above 255; a mask holds ids 1..254 (255 = unlabelled)'


def test_colour_mask_maps_each_colour_to_an_id_and_prints_the_mapping(tmp_path, capsys):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0]], np.uint8)
    path = tmp_path / 'colour.png'
    Image.fromarray(colours[IDS]).save(path)
    labels, palette = read_label_mask(path)
    # colour order: #00c800 before #ff0000
    np.testing.assert_array_equal(labels, np.array([[0, 2, 2, 1], [0, 0, 1, 1]]))
    assert palette is None
    assert capsys.readouterr().out == f'{path}: colour mask, 2 object(s): 1 = #00c800, 2 = #ff0000\n'


def test_transparent_pixels_of_an_rgba_mask_are_background(tmp_path, capsys):
    rgba = np.zeros((*IDS.shape, 4), np.uint8)
    rgba[..., 0] = 255                # red everywhere, visible only where an object is
    rgba[..., 3] = np.where(IDS > 0, 255, 0)
    path = tmp_path / 'rgba.png'
    Image.fromarray(rgba, mode='RGBA').save(path)
    np.testing.assert_array_equal(read_label_mask(path)[0], (IDS > 0).astype(np.uint8))
    assert '1 object(s): 1 = #ff0000' in capsys.readouterr().out


def test_colour_mask_with_more_than_254_colours_is_an_error(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = np.arange(256).reshape(16, 16)   # 255 colours besides black
    path = tmp_path / 'noisy.png'
    Image.fromarray(rgb).save(path)
    with pytest.raises(UserInputError) as e:
        read_label_mask(path)
    assert str(e.value) == (f'{path}: colour mask with 255 distinct colours, more than the 254 objects a mask can '
                            'hold (blurred or JPEG-compressed edges? draw in flat colours)')


@pytest.mark.parametrize('values, what', [
    ([0], 'every pixel is 0, background'),
    ([255], 'every pixel is 255, unlabelled'),
    ([0, 255], 'every pixel is 0, background, or 255, unlabelled'),
])
def test_a_mask_without_object_says_what_its_pixels_are(values, what):
    labels = np.array(values * 4, np.uint8).reshape(2, -1)
    with pytest.raises(UserInputError) as e:
        check_has_object('m.png', labels)
    assert str(e.value) == f'm.png: the mask contains no object ({what})'
    check_has_object('m.png', np.array([[0, 7, 255]], np.uint8))


def test_all_255_mask_is_one_line_exit_2_before_the_model(tmp_path, capsys):
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(frames / f'{i:05d}.png')
    mask = save_palette_png(tmp_path / 'void.png', np.full((32, 48), 255, np.uint8))
    out = tmp_path / 'out'
    argv = ['--video', frames, '--mask', mask, '--output', out, '--model', tmp_path / 'absent.pth', '--device', 'cpu']
    with pytest.raises(SystemExit) as e:
        run_main(lambda: segment_video.main([str(a) for a in argv]))
    assert e.value.code == 2
    assert capsys.readouterr().err == f'error: {mask}: the mask contains no object (every pixel is 255, unlabelled)\n'
    assert not out.exists()


def test_saliency_masks_for_training_are_thresholded_at_half_intensity(tmp_path):
    path = tmp_path / 'soft.png'
    Image.fromarray(np.array([[0, 100, 128, 255]], np.uint8)).save(path)
    np.testing.assert_array_equal(read_binary_mask(path), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(read_binary_mask(save_palette_png(tmp_path / 'p.png', IDS)), IDS > 0)
