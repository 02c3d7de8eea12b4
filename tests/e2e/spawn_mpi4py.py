"""mpi4py's spawn pattern (tests/e2e/test_spawn.py): the parent spawns
maxprocs copies of this script with COMM_SELF.Spawn(sys.executable, ...);
each child sends its rank back. Run with Debian's /usr/bin/python3 (its
python3-mpi4py is built for Open MPI)."""
import sys

from mpi4py import MPI

if len(sys.argv) > 1 and sys.argv[1] == "child":
    parent = MPI.Comm.Get_parent()
    parent.send((MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()), dest=0)
    parent.Disconnect()
else:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    comm = MPI.COMM_SELF.Spawn(sys.executable, args=[__file__, "child"], maxprocs=n)
    got = sorted(comm.recv(source=i) for i in range(n))
    print("mpi4py got", got, flush=True)
    comm.Disconnect()
