"""Train re-ID / classification models from one params.json.

    python train.py --operation start_train --config_path params.json [--sub_working_dir NAME] [--resume latest|N|PATH]
    python train.py --operation train       --config_path params.json [--sub_working_dir NAME] [--resume ...]
    python train.py --operation status      --config_path params.json
    python train.py --operation stop_train  --config_path params.json --sub_working_dir NAME
    python train.py --print-schema

Several processes (DistributedDataParallel; gloo on the CPU, NCCL on CUDA):
    python train.py --operation train|start_train --config_path params.json --nproc N     (N CPU processes)
    python train.py --operation train|start_train --config_path P   with "parallels": [0, 1, ...] (one per GPU)
    torchrun --nproc_per_node N train.py --operation train --config_path params.json --sub_working_dir NAME
    torchrun --nnodes M --node_rank R --nproc_per_node N --rdzv_backend c10d --rdzv_endpoint HOST:PORT \
        --rdzv_id NAME train.py --operation train --config_path params.json --sub_working_dir NAME   (each node)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import UserError, run_command


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operation", choices=["start_train", "train", "status", "stop_train"],
                        help="start_train: detached background run; train: foreground run with progress bars; "
                             "status: table of the runs under working_dir; stop_train: graceful stop of a run")
    parser.add_argument("--config_path", help="the params.json file")
    parser.add_argument("--sub_working_dir", help="run directory name inside working_dir (default: a timestamp)")
    parser.add_argument("--resume", help="continue a run: 'latest', an epoch number N (epoch_NNN.pth), or a "
                                         "checkpoint path")
    parser.add_argument("--nproc", type=int, help="train with N local processes (DistributedDataParallel; CPU: gloo). "
                                                  "With several GPU ids in parallels one process per id is started "
                                                  "without it. Under torchrun use --nproc_per_node instead")
    parser.add_argument("--print-schema", action="store_true", help="print the JSON Schema of params.json and exit")
    parser.add_argument("--attach", action="store_true", help=argparse.SUPPRESS)  # used by start_train's child
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a worker started by train.py
    args = parser.parse_args(argv)
    if not args.print_schema and not args.operation:
        parser.error("--operation is required (or --print-schema)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.operation != "train":
        return _main(args)
    from engine import early_stop

    handlers = early_stop.listen()  # a stop that arrives while the run is still starting ends it as "stopped"
    try:
        return _main(args)
    finally:
        early_stop.restore(handlers)


def _main(args) -> int:
    if args.print_schema:
        from engine.params import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    from engine import service
    from engine.params import load_params
    from engine.run_dir import RunDir

    if args.operation == "status":
        if not args.config_path:
            raise UserError("--operation status needs --config_path (it gives working_dir)")
        print(service.status_table(Path(load_params(args.config_path).working_dir)))
        return 0
    if args.operation == "stop_train":
        if not args.config_path or not args.sub_working_dir:
            raise UserError("--operation stop_train needs --config_path and --sub_working_dir")
        working_dir = Path(load_params(args.config_path).working_dir)
        return service.stop_run(RunDir(working_dir / service.run_name(args.sub_working_dir)), args.config_path)
    from engine.dist_env import DistEnv, process_count

    env = DistEnv.from_environ()
    if env.is_distributed and args.operation == "start_train":
        raise UserError("start_train starts its own processes (--nproc N); run torchrun with --operation train")
    if env.is_distributed and args.nproc is not None and not args.worker:
        raise UserError("--nproc starts the processes itself; under torchrun use --nproc_per_node instead")
    resume_path_only = args.resume is not None and not (args.resume == "latest" or args.resume.isdigit())
    if env.is_distributed and not args.sub_working_dir and not resume_path_only:
        raise UserError("under torchrun give --sub_working_dir NAME: every process must name the same run directory")
    # Only rank 0 of a distributed run checks that the run directory is new: it creates it for all ranks.
    attach = args.attach or args.worker or not env.is_main
    launch = service.Launch(args.config_path, args.sub_working_dir, args.resume, attach=attach)
    show_progress = sys.stderr.isatty() and not args.attach
    if env.is_distributed:
        return service.train_foreground(launch, show_progress=show_progress, console=not args.attach, env=env)
    nproc = process_count(launch.params.parallels, args.nproc)
    if args.operation == "start_train":
        return service.start_detached(launch, nproc)
    if nproc > 1:
        return service.train_launcher(launch, nproc, attached=args.attach, console=not args.attach)
    return service.train_foreground(launch, show_progress=show_progress, console=not args.attach)


if __name__ == "__main__":
    sys.exit(run_command(main))
