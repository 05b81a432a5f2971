#!/bin/bash
# Example SLURM job: a sweep where every run is one DDP job over 2 nodes x 4 GPUs.
#
#   sbatch benchmarks/sweeps/slurm_example.sh                 # the synth sweep
#   SWEEP=my_sweep sbatch benchmarks/sweeps/slurm_example.sh  # benchmarks/sweeps/my_sweep.yaml
#
# How it works: `srun` starts one task per GPU (8 here); every task runs the same sweep in lock
# step, and each run's `xmodal-bench bench` process is one rank of that run's DDP job: Lightning
# reads SLURM_PROCID / SLURM_NTASKS / SLURM_NODELIST itself (no torchrun needed). Only global
# rank 0 writes results.json, the leaderboards and the sweep record. trainer.devices must equal
# --ntasks-per-node and trainer.num_nodes must equal --nodes, else Lightning refuses to start.
# Completed runs are skipped, so resubmitting the same job resumes an interrupted sweep.
#
# Run from the repository root after `make setup`, on a filesystem every node sees (runs/, data/).
# The same layout under torchrun, one command per node (node_rank 0..N-1):
#   torchrun --nnodes 2 --nproc-per-node 4 --node-rank $NODE_RANK --master-addr $HEAD --master-port 29500 \
#     -m xmodal_bench sweep --config synth trainer.devices=4 trainer.num_nodes=2 trainer.strategy=ddp
# On one machine with several GPUs no launcher is needed: `make sweep SWEEP=synth` runs each
# bench with devices=auto, and Lightning starts one process per GPU itself.

#SBATCH --job-name=xmodal-sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=runs/slurm-%j.log

set -euo pipefail

SWEEP=${SWEEP:-synth}
NODES=${SLURM_JOB_NUM_NODES:-2}
GPUS_PER_NODE=${SLURM_NTASKS_PER_NODE:-4}

export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}
export WANDB_MODE=${WANDB_MODE:-offline}   # compute nodes often have no internet: `wandb sync runs/` later

srun .venv/bin/xmodal-bench sweep --config "$SWEEP" \
    trainer.accelerator=gpu trainer.devices="$GPUS_PER_NODE" trainer.num_nodes="$NODES" \
    trainer.strategy=ddp data.workers=$((OMP_NUM_THREADS > 4 ? 4 : OMP_NUM_THREADS))
