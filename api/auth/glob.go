package auth

import "github.com/meshreg/meshreg/internal/repoglob"

// RepoGlob is a repository pattern (see repoglob.RepoGlob, which the
// content policies share).
type RepoGlob = repoglob.RepoGlob

// ParseRepoGlob checks g (see repoglob.ParseRepoGlob).
func ParseRepoGlob(g string) (RepoGlob, error) { return repoglob.ParseRepoGlob(g) }
