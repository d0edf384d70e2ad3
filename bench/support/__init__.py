"""What Herald's benchmarks share: processes and their CPU time, wrk, servers, deadlines."""
