"""COCO as tools export it: files whose masks pycocotools itself encodes (polygons in parts, compressed and uncompressed
RLE, boxes), Roboflow's layout and category 0, category filters, images without annotations, file names in subfolders,
and one tiny segment training on such a file."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from conftest import cli, error_line, last_line, sets
from trainbench.core import DataError
from trainbench.readers.segment import COCO_FILE, load_mask, read_coco, read_dataset

W, H = 24, 20   # not square, so that an RLE's [height, width] order matters
# Roboflow: the project is category 0, the supercategory of its classes
CATEGORIES = [{'id': 0, 'name': 'defects', 'supercategory': 'none'}, {'id': 1, 'name': 'crack', 'supercategory': 'defects'},
              {'id': 2, 'name': 'spall', 'supercategory': 'defects'}]
KINDS = ('poly2', 'rle', 'rle_crowd', 'box', 'none', 'spall')


def _object(rng):
    "A random rectangle mask (H, W) and its box [x, y, w, h]."
    x, y = int(rng.integers(1, W - 10)), int(rng.integers(1, H - 10))
    w, h = int(rng.integers(4, 9)), int(rng.integers(4, 9))
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 1
    return m, [x, y, w, h]


def _uncompressed(m):
    "COCO's uncompressed RLE of a mask: run lengths over the column-major pixels, starting with a run of zeros."
    flat = np.asfortranarray(m).flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return {'size': [H, W], 'counts': ([0] if flat[0] else []) + runs}


def _annotation(kind, m, box, ann_id, image_id):
    "One annotation of `kind`, its mask encoded by pycocotools."
    rle = coco_mask.encode(np.asfortranarray(m))
    a = {'id': ann_id, 'image_id': image_id, 'category_id': 2 if kind == 'spall' else 1, 'iscrowd': int(kind == 'rle_crowd'),
         'area': float(coco_mask.area(rle)), 'bbox': coco_mask.toBbox(rle).tolist()}
    if kind == 'poly2':   # one object in two parts: its left and right halves as separate polygons
        x, y, w, h = box
        a['segmentation'] = [[x, y, x + w // 2, y, x + w // 2, y + h, x, y + h], [x + w // 2 + 1, y, x + w, y, x + w, y + h, x + w // 2 + 1, y + h]]
    elif kind == 'rle': a['segmentation'] = {'size': rle['size'], 'counts': rle['counts'].decode()}
    elif kind == 'rle_crowd': a['segmentation'] = _uncompressed(m)
    elif kind in ('box', 'spall'): a['segmentation'] = []
    return a


def write_export(root, n=(6, 2, 2), seed=0, subfolder=''):
    "A Roboflow-style COCO export: train/ valid/ test/, each with its images and _annotations.coco.json. Returns {file: mask}."
    rng, masks = np.random.default_rng(seed), {}
    for split, k in zip(('train', 'valid', 'test'), n):
        if not k: continue
        d = Path(root)/split
        images, anns = [], []
        for i in range(k):
            kind = KINDS[i % len(KINDS)]
            m, box = _object(rng)
            if kind == 'none': m[:] = 0
            name = f'{subfolder}{split}_{i}_{kind}.jpg'
            (d/name).parent.mkdir(parents=True, exist_ok=True)
            img = rng.normal(170, 8, (H, W, 3)) - 90*m[..., None]    # the object is dark
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d/name, quality=95)
            images.append({'id': i, 'file_name': name, 'width': W, 'height': H})
            if kind != 'none': anns.append(_annotation(kind, m, box, len(anns), i))
            masks[d/name] = (kind, m)
        (d/COCO_FILE).write_text(json.dumps({'info': {}, 'licenses': [], 'categories': CATEGORIES, 'images': images, 'annotations': anns}))
    return masks


def test_masks_as_pycocotools_encodes_them(tmp_path):
    "Each annotation kind gives the mask pycocotools encoded; a category filter keeps only its annotations."
    masks = write_export(tmp_path/'rf', subfolder='photos/2024/')   # file names in subfolders
    for cats in (None, ['defects'], [0], ['crack'], [1]):
        items = [it for s in read_dataset(tmp_path/'rf', 'rf', categories=cats).values() for it in s]
        assert len(items) == len(masks)
        for it in items:
            kind, m = masks[it.image]
            got = load_mask(it)
            assert got.shape == (H, W)
            if kind == 'poly2':   # the two parts, as pycocotools' own COCO API reads them from the file
                coco = COCO(str(it.image.parents[2]/COCO_FILE))
                img_id = next(i['id'] for i in coco.dataset['images'] if it.image.as_posix().endswith(i['file_name']))
                ref = np.maximum.reduce([coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))])
                assert np.array_equal(got, ref) and 0.6*m.sum() < got.sum() <= m.sum(), it.image
            elif kind == 'spall' and cats in (['crack'], [1]): assert got.sum() == 0
            else: assert np.array_equal(got, m), (kind, cats)   # RLE both ways, the box, and no annotation: an empty mask


def test_one_file_bad_category_and_rle_size(tmp_path):
    masks = write_export(tmp_path/'x', n=(3, 0, 0))
    j = tmp_path/'x'/'train'/COCO_FILE
    assert len(read_coco(j, 'x')) == 3
    with pytest.raises(DataError, match=r"_annotations.coco.json: no category 'dent' \(the file has 0: defects, 1: crack, 2: spall\)"):
        read_coco(j, 'x', ['dent'])
    d = json.loads(j.read_text())
    rle = next(a for a in d['annotations'] if isinstance(a['segmentation'], dict))
    rle['segmentation']['size'] = [W, H]
    j.write_text(json.dumps(d))
    with pytest.raises(DataError, match=f"annotation {rle['id']} is an RLE of size \\[{W}, {H}\\], its image is {H}x{W}"):
        read_coco(j, 'x')
    with pytest.raises(DataError, match="dataset 'x' keeps categories"):
        read_dataset(tmp_path/'x', 'x', fmt='masks', categories=['crack'])


def test_segment_trains_on_a_pycocotools_export(tmp_path):
    "A tiny segment run on a Roboflow export written with pycocotools, keeping one category by name."
    write_export(tmp_path/'data'/'rf', n=(12, 3, 3))
    code, out, err = cli('train', 'segment/quick', *sets(f'data.root_dir={tmp_path/"data"}',
                         'data.datasets=[{name: rf, prompts: [segment crack], categories: [crack]}]',
                         'data.img_size=32', 'training.batch_size=8', 'model.decoder_ff=64', 'training.epochs=1',
                         'output.tensorboard=false'), '--output-dir', tmp_path/'out')
    assert code == 0, error_line(err)
    res = json.loads((last_line(out)/'results.json').read_text())
    assert res['split'] == 'test' and res['n_images'] == 3 and set(res['per_dataset']) == {'rf'}
    assert 'rf: train 12, val 3, test 3 images' in err
