// Which MPI a program will bootstrap with, guessed cheaply from its ELF
// dependencies, so that jiffy serves PMIx (costly to start) only to programs
// that need it and warns when an MPI program never contacts either server.
//
// Reads the program's dynamic section and, breadth first, those of its
// non-system dependencies (a PETSc test links libpetsc, which links libmpi).
// No ld.so, no exec: a handful of small reads.
#pragma once

#include <string>

namespace jiffy {

enum class MpiKind {
  None,     // a plain program (or shell script): serve PMI-1 only, it is nearly free
  Mpich,    // links the MPICH family (PMI-1)
  OpenMpi,  // links Open MPI (PMIx)
  Unknown,  // an interpreter (python, perl, ...) that may load either at run time
};

const char* to_string(MpiKind k);

// REQUIRES: path is the resolved program. Never throws: unreadable or odd
// files are MpiKind::None.
MpiKind detect_mpi(const std::string& path);

}  // namespace jiffy
