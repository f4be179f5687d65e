"""Evaluate a representation: weighted kNN and a linear probe on frozen features, plus a t-SNE picture.

    python recipes/evaluate_ssl.py --model_name_or_path outputs/simclr                # a saved hfssl model, digits
    python recipes/evaluate_ssl.py --model_name_or_path outputs/simclr/export         # an exported backbone folder
    python recipes/evaluate_ssl.py --model_name_or_path resnet18 --pretrained false   # a timm name (random weights)
    python recipes/evaluate_ssl.py --model_name_or_path google/vit-base-patch16-224 --dataset_name cifar10 \
        --image_column img --eval_split test

The model is any saved hfssl model or checkpoint (its backbone is evaluated), a backbone folder exported by
`hfssl.export.save_backbone`, a timm model name or a transformers checkpoint (see `hfssl.evaluation.features.
load_encoder`). Images come from --dataset_name (Hub id or save_to_disk folder), --train_dir (image folder) or, by
default, scikit-learn's bundled digits. The classifiers fit on --train_split and are scored on --eval_split, by
default the data's test split, else its validation split, else a held-out 20% of train (logged, and recorded in
eval_results.json as "eval_split"). Preprocessing: resize to --image_size (default: the side the model was trained
at, as its folder records it, else the model's default input size) and the model's recorded normalisation.
Results go to --output_dir (default: `<model folder>-eval`, or outputs/evaluate_ssl/<name> for a model name; never
into the model folder unless --output_dir names it): eval_results.json, embeddings_tsne.png of the eval features
and, when the model folder holds a trainer_state.json, training_curves.png. Accuracy is computed directly:
`evaluate.load("accuracy")` downloads from the Hub, which offline machines cannot do.
"""

import json
import logging
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hfssl.data.images import load_image_dataset
from hfssl.distributed import end_processes
from hfssl.evaluation.features import dataset_features, load_encoder
from hfssl.evaluation.knn import check_neighbour_count, knn_accuracy
from hfssl.evaluation.linear_probe import linear_probe
from hfssl.evaluation.plots import plot_embeddings, plot_training_curves
from hfssl.evaluation.splits import load_evaluation_splits

logger = logging.getLogger(__name__)


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(metadata={"help": "hfssl model folder, exported backbone, timm name or HF id."})
    pretrained: bool = field(default=True, metadata={"help": "Load the weights of a timm name / Hub id."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or save_to_disk folder."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration name (datasets.load_dataset's second argument)."}
    )
    train_dir: str | None = field(default=None, metadata={"help": "Folder of images in class sub-folders."})
    builtin: str = field(default="digits", metadata={"help": "Offline default: digits or fashion_mnist."})
    image_column: str | None = field(
        default=None, metadata={"help": "The column holding the images (default: the first Image column)."}
    )
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "Split to classify (default: test, else "
                                                                   "validation, else 20% of train held out)."})
    image_size: int | None = field(default=None, metadata={"help": "Resize side (default: the training side)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: int | None = None
    k: int = field(default=200, metadata={"help": "kNN neighbours (InstDisc, DINO: 200 and 20; keep it below the "
                                                  "number of train images)."})
    temperature: float = field(default=0.1, metadata={"help": "kNN vote temperature (InstDisc, DINO: 0.07-0.1)."})
    linear_probe_epochs: int = 100
    tsne_points: int = field(default=2000, metadata={"help": "Points in the t-SNE picture (0: no picture)."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: <model folder>-eval, or "
                                                                   "outputs/evaluate_ssl/<name> for a model name."})
    seed: int = 0


def load_splits(args: EvaluationArguments, image_size: int):
    options = {"dataset_name": args.dataset_name, "train_dir": args.train_dir, "builtin": args.builtin,
               "image_size": image_size, "dataset_config_name": args.dataset_config_name,
               "image_column": args.image_column}
    train, test, eval_split = load_evaluation_splits(lambda split: load_image_dataset(split=split, **options),
                                                     args.train_split, args.eval_split, seed=args.seed)
    for name, dataset in (("train", train), ("eval", test)):
        if "label" not in dataset.column_names:
            raise ValueError(f"The {name} split has no label column ({dataset.column_names}); kNN and probes need labels.")
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        test = test.select(range(min(args.max_eval_samples, len(test))))
    return train, test, eval_split


def default_output_dir(model_name_or_path: str) -> str:
    """`<model folder>-eval` beside a model folder, else outputs/evaluate_ssl/<name> (never the model folder)."""
    if os.path.isdir(model_name_or_path):
        return os.path.normpath(os.path.abspath(model_name_or_path)) + "-eval"
    return os.path.join("outputs", "evaluate_ssl", model_name_or_path.replace("/", "--"))


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses()
    encoder = load_encoder(args.model_name_or_path, pretrained=args.pretrained)
    image_size = args.image_size or int(encoder.data_config["input_size"][-1])
    train, test, eval_split = load_splits(args, image_size)
    logger.info("Extracting features of %d train and %d eval (%s) images at %d px (%s)", len(train), len(test),
                eval_split, image_size, "--image_size" if args.image_size else "the model's recorded input size")
    check_neighbour_count(args.k, len(train))
    train_features, train_labels = dataset_features(encoder, train, image_size=image_size)
    test_features, test_labels = dataset_features(encoder, test, image_size=image_size)
    knn = knn_accuracy(train_features, train_labels, test_features, test_labels, args.k, args.temperature)
    probe = linear_probe(train_features, train_labels, test_features, test_labels, epochs=args.linear_probe_epochs,
                         seed=args.seed)
    results = {"model": args.model_name_or_path, "knn/top1": knn, "linear_probe/top1": probe.accuracy,
               "linear_probe/learning_rate": probe.learning_rate, "linear_probe/weight_decay": probe.weight_decay,
               "k": args.k, "temperature": args.temperature, "train_split": args.train_split, "eval_split": eval_split,
               "train_samples": len(train), "eval_samples": len(test), "image_size": image_size,
               "feature_dim": int(train_features.shape[1])}
    print(f"knn_top1={knn:.4f} linear_probe_top1={probe.accuracy:.4f}")

    output_dir = args.output_dir or default_output_dir(args.model_name_or_path)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "eval_results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    if args.tsne_points > 0:
        names = test.features["label"].names if hasattr(test.features["label"], "names") else None
        plot_embeddings(test_features, test_labels, os.path.join(output_dir, "embeddings_tsne.png"), class_names=names,
                        max_points=args.tsne_points, seed=args.seed, model_name=args.model_name_or_path,
                        knn_top1=knn, k=args.k)
    state = os.path.join(args.model_name_or_path, "trainer_state.json")
    if os.path.exists(state):
        plot_training_curves(state, os.path.join(output_dir, "training_curves.png"))
    logger.info("Wrote the results and pictures to %s", output_dir)


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch
