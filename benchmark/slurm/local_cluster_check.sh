#!/usr/bin/env bash
# clipbench: end-to-end check of benchmark/slurm/fit.sbatch against a REAL single-node
# SLURM cluster on this machine (Debian/Ubuntu slurm-wlm + munge on localhost).
#
#   sudo benchmark/slurm/local_cluster_check.sh [--ddp] [--time-limit] [--keep-daemons]
#
# Not part of `make test`: it needs root, apt-get and permission to start daemons. It is
# idempotent: packages, the munge key, /etc/slurm/slurm.conf (only one this script wrote;
# a foreign one is never touched) and running daemons are reused. Steps print PASS/FAIL;
# the exit status is the number of failed checks.
#
#   1. install slurm-wlm + munge, start munged, slurmctld, slurmd; `sinfo` shows the node idle
#   2. submit a 1-task CPU job with `python -m benchmark slurm --preset bench`
#   3. once checkpoints/last.ckpt exists, send SIGUSR1 to the job step the way
#      `#SBATCH --signal=SIGUSR1@90` does (`scancel --signal=USR1 <job>`), or with
#      --time-limit let a real 3-minute limit send it
#   4. check: hpc_ckpt_1.ckpt written, `scontrol requeue` done (Restarts=1), the second
#      launch restored hpc_ckpt_1.ckpt, final.json's global_step is the full run's, a
#      second linked W&B offline run (wandb_run.json restarts=1)
#   5. --ddp: the same with 2 tasks (DDP over gloo, started by srun). This is the check
#      that showed Lightning's own auto-requeue (2.6) hanging: it checkpoints inside the
#      signal handler and the ranks' barriers desynchronise; clipbench's
#      SlurmRequeueCallback replaces it (on a hang, stacks are printed when py-spy is on PATH)
#
# Ctrl-C or the end stops the daemons this script started (not ones already running)
# unless --keep-daemons. Work files: $CHECK_DIR (default /tmp/clipbench-slurm-check).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CHECK_DIR=${CHECK_DIR:-/tmp/clipbench-slurm-check}
CONF=/etc/slurm/slurm.conf
MARKER="# written by clipbench benchmark/slurm/local_cluster_check.sh"
DDP=0 TIME_LIMIT=0 KEEP=0
for arg in "$@"; do
    case $arg in
        --ddp) DDP=1 ;;
        --time-limit) TIME_LIMIT=1 ;;
        --keep-daemons) KEEP=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done

FAILED=0
STARTED=()
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
info() { echo "      $*"; }

cleanup() {
    if ((KEEP)); then info "daemons left running (--keep-daemons)"; return; fi
    local name pid
    for name in "${STARTED[@]}"; do  # slurmd, then slurmctld, then munged
        pid=$(cat "$(pidfile "$name")" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || continue
        wait_for 30 bash -c "! kill -0 $pid 2>/dev/null" && info "stopped $name (pid $pid)"
    done
}
pidfile() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "/run/slurm/$1.pid" ;; esac; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until the command succeeds (0) or TIMEOUT seconds pass (1).
wait_for() {
    local timeout=$1; shift
    local end=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS >= end)) && return 1
        sleep 1
    done
}

# -------------------------------------------------------------------------- 1. the cluster
if [[ $EUID -ne 0 ]]; then
    fail "must run as root (apt-get, /etc/slurm, daemons)"; exit 1
fi
[[ -x $PYTHON ]] || { fail "no interpreter at $PYTHON (set PYTHON=...)"; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    info "installing slurm-wlm munge (apt-get)"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge) >"$CHECK_DIR.apt.log" 2>&1
fi
check "packages installed ($(dpkg-query -W -f='slurmctld ${Version}, ' slurmctld 2>/dev/null)$(dpkg-query -W -f='munge ${Version}' munge 2>/dev/null))" \
    bash -c 'command -v slurmctld slurmd munged sbatch >/dev/null'

# munge: a key (Debian's postinst makes one), its runtime dir, the daemon as user munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null || create-munge-key -f
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
if ! pgrep -x munged >/dev/null; then
    su -s /bin/sh munge -c /usr/sbin/munged && STARTED=(munged "${STARTED[@]}")
    sleep 1
fi
check "munge credentials round-trip" bash -c 'munge -n | unmunge >/dev/null'

# slurm.conf: one node (this host, its CPUs and memory), no cgroups, no accounting
NODE=$(hostname -s)
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    fail "$CONF exists and was not written by this script: not touching it"; exit 1
fi
CPUS=$(nproc)
MEM=$(slurmd -C 2>/dev/null | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)
MEM=$(( ${MEM:-2048} * 9 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
NEW_CONF=$(cat <<EOF
$MARKER
ClusterName=clipbench-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# containers: no cgroup plugins (proctrack/cgroup and task/cgroup need a writable cgroup fs)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=30
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
if [[ ! -e $CONF ]] || [[ "$(cat "$CONF")" != "$NEW_CONF" ]]; then
    echo "$NEW_CONF" >"$CONF"
    info "wrote $CONF"
    # a running cluster with another config: restart it
    pkill_pid() { local f=$1; [[ -s $f ]] && kill "$(cat "$f")" 2>/dev/null; }
    pkill_pid /run/slurm/slurmd.pid; pkill_pid /run/slurm/slurmctld.pid; sleep 2
fi
if ! pgrep -x slurmctld >/dev/null; then
    slurmctld -i && STARTED=(slurmctld "${STARTED[@]}")
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd && STARTED=(slurmd "${STARTED[@]}")
fi
node_idle() { [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null) == idle* ]]; }
if ! wait_for 30 node_idle; then
    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null
    wait_for 15 node_idle
fi
check "sinfo: node $NODE idle ($(sinfo -h -o '%P %a %D %T %N' 2>&1 | head -1); $(sinfo -V))" node_idle
check "srun -n1 runs a task" bash -c 'timeout 60 srun -n1 -t 1 true'
((FAILED)) && { echo "the cluster is not usable; stopping"; exit "$FAILED"; }

# ------------------------------------------------------------ 2.-4. template + requeue
job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }

# run_check NAME TASKS: submit, preempt, check the resume.
run_check() {
    local name=$1 tasks=$2 runs=$CHECK_DIR/$1
    # --time-limit: 4 full epochs of the embedded ImageNet (1000 images: 32 batches) outlast
    # the 90 s before a 3-minute limit; SLURM sends the signal up to 60 s early.
    local cpus=$((CPUS / tasks)) time=00:20:00 batches=8 epochs=3
    ((cpus >= 1)) || cpus=1
    ((TIME_LIMIT)) && time=00:03:00 batches=32 epochs=4
    rm -rf "$runs"
    echo "== $name: $tasks task(s), --time $time"
    local out
    out=$(cd "$REPO" && "$PYTHON" -m benchmark slurm --datasets imagenet --optimizers clipped_sstm --gpus 0 \
        --cpu-tasks "$tasks" --preset bench --runs-dir "$runs" --time "$time" --cpus-per-task "$cpus" \
        -- --trainer.max_epochs "$epochs" --trainer.limit_train_batches "$batches" --trainer.limit_val_batches 2 \
        --run.wandb offline 2>&1)
    local job
    job=$(grep -o 'Submitted batch job [0-9]*' <<<"$out" | awk '{print $4}')
    if [[ -z $job ]]; then fail "$name: sbatch submission ($out)"; return; fi
    pass "$name: python -m benchmark slurm submitted job $job"
    local run=$runs/imagenet/clipped_sstm/seed0 log
    log=$run/slurm-$job.out
    check "$name: job running" wait_for 120 bash -c "[[ \$(squeue -h -j $job -o %T) == RUNNING ]]"
    check "$name: first epoch checkpointed (checkpoints/last.ckpt)" wait_for 600 test -e "$run/checkpoints/last.ckpt"
    if ((TIME_LIMIT)); then
        info "waiting for the time limit's SIGUSR1 (--signal=SIGUSR1@90 of a 3-minute job)"
    else
        sleep 2
        scancel --signal=USR1 "$job" && info "scancel --signal=USR1 $job (what --signal=SIGUSR1@90 sends)"
    fi
    check "$name: requeued by the job itself (Restarts=1)" wait_for 300 bash -c "[[ \$(scontrol show job $job | grep -o 'Restarts=[0-9]*') == Restarts=1 ]]"
    if [[ $(job_field "$job" Restarts) != 1 ]]; then
        info "no requeue: stacks of the training processes follow if py-spy is on PATH"
        command -v py-spy >/dev/null && for p in $(pgrep -f "^$PYTHON -m benchmark fit .*--run.dir $run "); do py-spy dump --pid "$p"; done
        grep -v '[━│┃]' "$log" | tail -6 | sed 's/^/      | /'
        scancel "$job"
        wait_for 120 bash -c "[[ -z \$(squeue -h -j $job 2>/dev/null) ]]" || info "job $job still in the queue"
        return
    fi
    check "$name: hpc_ckpt_1.ckpt written" test -s "$run/hpc_ckpt_1.ckpt"
    info "requeued; SLURM holds a requeued job ~2 minutes (Reason=BeginTime) before it starts again"
    check "$name: job finished (COMPLETED)" wait_for 900 bash -c "[[ \$(scontrol show job $job | grep -o 'JobState=[A-Z]*') == JobState=COMPLETED ]]"
    local restarts
    restarts=$(job_field "$job" Restarts)
    ((restarts == 1)) || info "the job requeued itself $restarts times"
    check "$name: log shows the SIGUSR1 handling" grep -q "Handling auto-requeue signal\|SIGUSR1 received" "$log"
    check "$name: log shows 'Requeued SLURM job: $job'" grep -q "Requeued SLURM job: $job" "$log"
    check "$name: second launch restored hpc_ckpt_1.ckpt" grep -q "Restoring states from the checkpoint path at $run/hpc_ckpt_1.ckpt" "$log"
    local step expected
    step=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['global_step'])" "$run/final.json" 2>/dev/null)
    expected=$("$PYTHON" -c "import json,math,sys; d=json.load(open(sys.argv[1])); print(d['epochs']*math.ceil($batches/d['accumulate_grad_batches']))" "$run/final.json" 2>/dev/null)
    check "$name: final.json global_step=$step (full run: $expected)" test -n "$step" -a "$step" = "$expected"
    check "$name: wandb_run.json restarts=$restarts" grep -q "\"restarts\": $restarts" "$run/wandb_run.json"
    check "$name: $((restarts + 1)) W&B offline runs" test "$(ls -d "$run"/wandb/offline-run-* 2>/dev/null | wc -l)" -eq $((restarts + 1))
    if ((tasks > 1)); then
        check "$name: Lightning saw $tasks SLURM ranks" grep -q "GLOBAL_RANK: $((tasks - 1)), MEMBER: $tasks/$tasks" "$log"
    fi
    info "log: $log"
}

run_check single 1
((DDP)) && run_check ddp 2

echo "== $FAILED failed check(s)"
exit "$FAILED"
