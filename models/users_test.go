package models_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

const password = "correct horse battery"

func TestCreateUserAndAuthenticate(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		u, err := h.s.CreateUser(ctx, alice, models.UserInput{Username: " bob ", Password: password, Role: models.RoleOwner})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if !strings.HasPrefix(u.ID, "user_") || u.Username != "bob" || u.Role != models.RoleOwner {
			t.Fatalf("user = %+v", u)
		}
		got, err := h.s.GetUser(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.PasswordHash == "" || strings.Contains(got.PasswordHash, password) {
			t.Errorf("stored password hash %q is empty or holds the password", got.PasswordHash)
		}
		ev := wantAudit(t, h, "user.create", u.ID)
		if strings.Contains(ev.Details, password) || strings.Contains(ev.Details, got.PasswordHash) {
			t.Errorf("audit details carry the password: %s", ev.Details)
		}

		if who, err := h.s.Authenticate(ctx, "bob", password); err != nil || who.ID != u.ID {
			t.Errorf("Authenticate with the right password = %v, %v", who, err)
		}
		if _, err := h.s.Authenticate(ctx, "bob", password+"!"); !errors.Is(err, models.ErrBadCredentials) {
			t.Errorf("wrong password: error = %v, want ErrBadCredentials", err)
		}
		if _, err := h.s.Authenticate(ctx, "nobody", password); !errors.Is(err, models.ErrBadCredentials) {
			t.Errorf("unknown user: error = %v, want ErrBadCredentials", err)
		}
		if n, err := h.s.CountUsers(ctx); err != nil || n != 1 {
			t.Errorf("CountUsers = %d, %v; want 1", n, err)
		}
	})
}

func TestUserValidation(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		cases := []struct {
			name  string
			in    models.UserInput
			field string
		}{
			{"upper-case username", models.UserInput{Username: "Bob", Password: password, Role: models.RoleReader}, "username"},
			{"empty username", models.UserInput{Username: "", Password: password, Role: models.RoleReader}, "username"},
			{"username with a space", models.UserInput{Username: "bo b", Password: password, Role: models.RoleReader}, "username"},
			{"short password", models.UserInput{Username: "bob", Password: "short", Role: models.RoleReader}, "password"},
			{"password past bcrypt's 72 bytes", models.UserInput{Username: "bob", Password: strings.Repeat("p", 73), Role: models.RoleReader}, "password"},
			{"unknown role", models.UserInput{Username: "bob", Password: password, Role: "Admin"}, "role"},
		}
		for _, c := range cases {
			_, err := h.s.CreateUser(ctx, alice, c.in)
			t.Run(c.name, func(t *testing.T) { wantFields(t, err, c.field) })
		}
		if n, _ := h.s.CountUsers(ctx); n != 0 {
			t.Errorf("users after refused creates = %d, want 0", n)
		}
		wantNoAudit(t, h, "user.create")
	})
}

func TestDuplicateUsernameRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		mustUser(t, h, "bob", models.RoleOwner)
		_, err := h.s.CreateUser(ctx, alice, models.UserInput{Username: "bob", Password: password, Role: models.RoleReader})
		wantFields(t, err, "username")
		if n, _ := h.s.CountUsers(ctx); n != 1 {
			t.Errorf("users = %d, want 1", n)
		}
		if n := len(auditEvents(t, h, "user.create")); n != 1 {
			t.Errorf("user.create events = %d, want 1", n)
		}
	})
}

func TestLastOwnerCannotBeDeletedOrDemoted(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		owner := mustUser(t, h, "root", models.RoleOwner)
		reader := mustUser(t, h, "reader", models.RoleReader)

		wantConflict(t, h.s.DeleteUser(ctx, alice, owner.ID), "last_owner")
		_, err := h.s.UpdateUser(ctx, alice, owner.ID, models.UserInput{Username: "root", Role: models.RoleContributor})
		wantConflict(t, err, "last_owner")
		if got, _ := h.s.GetUser(ctx, owner.ID); got.Role != models.RoleOwner {
			t.Fatalf("role after a refused demotion = %q", got.Role)
		}
		wantNoAudit(t, h, "user.delete")
		wantNoAudit(t, h, "user.update")

		// With a second Owner, the first may go.
		if _, err := h.s.UpdateUser(ctx, alice, reader.ID, models.UserInput{Username: "reader", Role: models.RoleOwner}); err != nil {
			t.Fatalf("promote: %v", err)
		}
		wantAudit(t, h, "user.update", reader.ID)
		if _, err := h.s.UpdateUser(ctx, alice, owner.ID, models.UserInput{Username: "root", Role: models.RoleReader}); err != nil {
			t.Fatalf("demote one of two Owners: %v", err)
		}
		// Now reader is the last Owner again.
		wantConflict(t, h.s.DeleteUser(ctx, alice, reader.ID), "last_owner")
		if err := h.s.DeleteUser(ctx, alice, owner.ID); err != nil {
			t.Fatalf("delete a non-Owner: %v", err)
		}
		_, err = h.s.GetUser(ctx, owner.ID)
		wantNotFound(t, "get deleted user", err)
		wantAudit(t, h, "user.delete", owner.ID)
	})
}

func TestUpdateUser(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		mustUser(t, h, "root", models.RoleOwner)
		u := mustUser(t, h, "bob", models.RoleReader)
		session, err := h.s.CreateSession(ctx, alice, u)
		if err != nil {
			t.Fatal(err)
		}

		// A role change keeps the password and the session.
		if _, err := h.s.UpdateUser(ctx, alice, u.ID, models.UserInput{Username: "bob", Role: models.RoleOperator}); err != nil {
			t.Fatalf("change role: %v", err)
		}
		if _, err := h.s.Authenticate(ctx, "bob", password); err != nil {
			t.Errorf("old password after a role change: %v", err)
		}
		if _, err := h.s.UserForSession(ctx, session); err != nil {
			t.Errorf("session after a role change: %v", err)
		}

		// A new password ends every session.
		const newPassword = "a much better passphrase"
		got, err := h.s.UpdateUser(ctx, alice, u.ID, models.UserInput{Username: "bob", Password: newPassword, Role: models.RoleOperator})
		if err != nil || got.Role != models.RoleOperator {
			t.Fatalf("change password = %+v, %v", got, err)
		}
		if _, err := h.s.Authenticate(ctx, "bob", password); !errors.Is(err, models.ErrBadCredentials) {
			t.Errorf("old password after a change: %v, want ErrBadCredentials", err)
		}
		if _, err := h.s.Authenticate(ctx, "bob", newPassword); err != nil {
			t.Errorf("new password: %v", err)
		}
		if _, err := h.s.UserForSession(ctx, session); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("session after a password change: %v, want ErrUnauthenticated", err)
		}
		if evs := auditEvents(t, h, "user.update"); len(evs) != 2 || strings.Contains(evs[0].Details, newPassword) {
			t.Errorf("user.update events = %+v, want 2 without the password", evs)
		}

		_, err = h.s.UpdateUser(ctx, alice, u.ID, models.UserInput{Username: "robert", Role: models.RoleOperator})
		wantFields(t, err, "username")
		_, err = h.s.UpdateUser(ctx, alice, u.ID, models.UserInput{Username: "bob", Password: "short", Role: models.RoleOperator})
		wantFields(t, err, "password")
		_, err = h.s.UpdateUser(ctx, alice, "user_nope", models.UserInput{Username: "bob", Role: models.RoleReader})
		wantNotFound(t, "update unknown user", err)
		wantNotFound(t, "delete unknown user", h.s.DeleteUser(ctx, alice, "user_nope"))
		_, err = h.s.GetUser(ctx, "user_nope")
		wantNotFound(t, "get unknown user", err)
	})
}

func TestRoleRank(t *testing.T) {
	order := []string{models.RoleReader, models.RoleOperator, models.RoleContributor, models.RoleOwner}
	for i := 1; i < len(order); i++ {
		if models.RoleRank(order[i]) <= models.RoleRank(order[i-1]) {
			t.Errorf("RoleRank(%s) is not above RoleRank(%s)", order[i], order[i-1])
		}
	}
	if models.RoleRank(models.RoleReader) <= 0 || models.RoleRank("Admin") != 0 {
		t.Errorf("RoleRank(Reader) = %d, RoleRank(Admin) = %d; want >0 and 0", models.RoleRank(models.RoleReader), models.RoleRank("Admin"))
	}
}

func TestSessions(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		u := mustUser(t, h, "bob", models.RoleOwner)
		secret, err := h.s.CreateSession(ctx, alice, u)
		if err != nil {
			t.Fatal(err)
		}
		wantAudit(t, h, "session.login", u.ID)
		if n := h.countRows(t, &models.Session{}, "token_hash = ?", secret); n != 0 {
			t.Error("the session secret is stored as is")
		}
		if n := h.countRows(t, &models.Session{}, "token_hash = ?", models.HashSecret(secret)); n != 1 {
			t.Errorf("sessions stored under the secret's hash = %d, want 1", n)
		}
		who, err := h.s.UserForSession(ctx, secret)
		if err != nil || who.ID != u.ID {
			t.Fatalf("UserForSession = %v, %v", who, err)
		}
		if _, err := h.s.UserForSession(ctx, "lbs_forged"); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("unknown session: %v, want ErrUnauthenticated", err)
		}

		h.advance(models.SessionLifetime - time.Second)
		if _, err := h.s.UserForSession(ctx, secret); err != nil {
			t.Errorf("session a second before it expires: %v", err)
		}
		h.advance(2 * time.Second)
		if _, err := h.s.UserForSession(ctx, secret); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("expired session: %v, want ErrUnauthenticated", err)
		}

		// Logging out ends a live session.
		other, err := h.s.CreateSession(ctx, alice, u)
		if err != nil {
			t.Fatal(err)
		}
		bob := models.Actor{UserID: u.ID, Username: "bob"}
		if err := h.s.DeleteSession(ctx, bob, other); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.UserForSession(ctx, other); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("session after logout: %v, want ErrUnauthenticated", err)
		}
		wantAudit(t, h, "session.logout", u.ID)
		// Logging out twice is harmless and audits nothing more.
		if err := h.s.DeleteSession(ctx, bob, other); err != nil {
			t.Errorf("second logout: %v", err)
		}
		wantAudit(t, h, "session.logout", u.ID)

		if err := h.s.PurgeExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if n := h.countRows(t, &models.Session{}, ""); n != 0 {
			t.Errorf("sessions after purging = %d, want 0", n)
		}
	})
}

func TestAPITokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		u := mustUser(t, h, "bob", models.RoleOwner)
		tok, secret, err := h.s.CreateToken(ctx, alice, u, " ci ", 30*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Name != "ci" || !strings.HasPrefix(tok.ID, "tok_") || !tok.ExpiresAt.Equal(h.clock.T.Add(30*24*time.Hour)) {
			t.Errorf("token = %+v", tok)
		}
		if len(secret) < 30 || tok.TokenHash == secret || strings.Contains(tok.TokenHash, secret) || tok.TokenHash != models.HashSecret(secret) {
			t.Errorf("token hash %q, secret %q: want the SHA-256 of the secret, not the secret", tok.TokenHash, secret)
		}
		ev := wantAudit(t, h, "token.create", tok.ID)
		if strings.Contains(ev.Details, secret) {
			t.Errorf("audit details carry the secret: %s", ev.Details)
		}
		listed, _, err := h.s.ListTokens(ctx, u.ID, models.Page{})
		if err != nil || len(listed) != 1 || listed[0].TokenHash == secret {
			t.Fatalf("ListTokens = %+v, %v", listed, err)
		}

		who, got, err := h.s.UserForToken(ctx, secret)
		if err != nil || who.ID != u.ID || got.ID != tok.ID {
			t.Fatalf("UserForToken = %v, %v, %v", who, got, err)
		}
		listed, _, _ = h.s.ListTokens(ctx, u.ID, models.Page{})
		if listed[0].LastUsedAt == nil || !listed[0].LastUsedAt.Equal(h.clock.T) {
			t.Errorf("last used = %v, want %v", listed[0].LastUsedAt, h.clock.T)
		}
		if _, _, err := h.s.UserForToken(ctx, "lbt_forged"); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("unknown token: %v, want ErrUnauthenticated", err)
		}

		h.advance(30*24*time.Hour + time.Second)
		if _, _, err := h.s.UserForToken(ctx, secret); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("expired token: %v, want ErrUnauthenticated", err)
		}
		if err := h.s.PurgeExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if listed, _, _ := h.s.ListTokens(ctx, u.ID, models.Page{}); len(listed) != 0 {
			t.Errorf("tokens after purging = %d, want 0", len(listed))
		}
	})
}

func TestAPITokenRevocation(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		mustUser(t, h, "root", models.RoleOwner)
		u := mustUser(t, h, "bob", models.RoleContributor)
		other := mustUser(t, h, "carol", models.RoleContributor)

		_, _, err := h.s.CreateToken(ctx, alice, u, "", time.Hour)
		wantFields(t, err, "name")
		_, _, err = h.s.CreateToken(ctx, alice, u, "ci", 0)
		wantFields(t, err, "expires_in_days")
		_, _, err = h.s.CreateToken(ctx, alice, u, "ci", models.MaxTokenLifetime+time.Hour)
		wantFields(t, err, "expires_in_days")
		wantNoAudit(t, h, "token.create")

		tok, secret, err := h.s.CreateToken(ctx, alice, u, "ci", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wantNotFound(t, "delete another user's token", h.s.DeleteToken(ctx, alice, other.ID, tok.ID))
		if _, _, err := h.s.UserForToken(ctx, secret); err != nil {
			t.Fatalf("token after a refused revocation: %v", err)
		}
		if err := h.s.DeleteToken(ctx, alice, u.ID, tok.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.s.UserForToken(ctx, secret); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("revoked token: %v, want ErrUnauthenticated", err)
		}
		wantAudit(t, h, "token.delete", tok.ID)

		// Deleting a user revokes their tokens and sessions.
		_, secret, err = h.s.CreateToken(ctx, alice, other, "ci", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		session, err := h.s.CreateSession(ctx, alice, other)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.s.DeleteUser(ctx, alice, other.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.s.UserForToken(ctx, secret); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("token of a deleted user: %v, want ErrUnauthenticated", err)
		}
		if _, err := h.s.UserForSession(ctx, session); !errors.Is(err, models.ErrUnauthenticated) {
			t.Errorf("session of a deleted user: %v, want ErrUnauthenticated", err)
		}
		if n := h.countRows(t, &models.APIToken{}, "user_id = ?", other.ID); n != 0 {
			t.Errorf("tokens left for a deleted user = %d", n)
		}
	})
}
