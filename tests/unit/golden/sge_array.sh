# provider=sge: 3 run(s) in 1 job array(s), one `qsub -terse ... SCRIPT` each
# ==> /sweeps/demo/.hpcorch/sge/a0x7a917ca6.sh <==
#!/bin/bash
# hpcorch sweep demo1234: 3 run(s) in 3 array task(s), 1 per task
# submitted as: qsub -terse -N hpcorch-demo1234-a0x7a917ca6 -t 1-3 -tc 4 -wd /sweeps/demo/.hpcorch/sge -o '/sweeps/demo/.hpcorch/sge/logs/$JOB_ID.$TASK_ID.log' -j y -S /bin/bash -V -r y -l h_rt=5400 -l h_vmem=2048M -pe smp 4 -q long.q -P proj42 -l arch=lx-amd64 -m e /sweeps/demo/.hpcorch/sge/a0x7a917ca6.sh

# array task id -> runs (num run_key run_dir); as data in /sweeps/demo/.hpcorch/sge/a0x7a917ca6.json
#   1: #0 key0000 /sweeps/demo/0
#   2: #1 key0001 /sweeps/demo/1
#   3: #2 key0002 /sweeps/demo/2

# setup (provider.setup)
module load python/3.11
source /opt/venv/bin/activate

# Runs this task's run(s) from their spec files, each with its own logs and record.
exec /opt/venv/bin/python -m hpcorch.providers.sge.task /sweeps/demo/.hpcorch/sge/a0x7a917ca6.json
