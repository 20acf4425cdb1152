package pgrole

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// DefaultSCRAMIterations is the default PBKDF2 iteration count for
// [SCRAMVerifier]. It matches PostgreSQL's default scram_iterations.
const DefaultSCRAMIterations = 4096

const (
	scramSaltLen = 16
	scramKeyLen  = sha256.Size
)

// SCRAMVerifier returns the SCRAM-SHA-256 verifier of password in the format
// PostgreSQL stores in pg_authid.rolpassword and accepts in
// CREATE ROLE ... PASSWORD:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// where salt is 16 bytes from crypto/rand and all three values use standard
// base64 with padding (RFC 5802, RFC 7677):
//
//	SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations, 32)
//	StoredKey      = SHA-256(HMAC-SHA-256(SaltedPassword, "Client Key"))
//	ServerKey      = HMAC-SHA-256(SaltedPassword, "Server Key")
//
// iterations must be in [1, 2147483647] (PostgreSQL parses it as an int).
// password must be non-empty printable ASCII (0x20-0x7E), for which SASLprep
// is the identity; anything else is an error rather than a verifier that the
// server might not match. Passwords from [NewPassword] always qualify.
// Returned errors never contain the password.
func SCRAMVerifier(password string, iterations int) (string, error) {
	if err := checkSCRAMInput(password, iterations); err != nil {
		return "", err
	}
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("pgrole: reading random SCRAM salt: %w", err)
	}
	return scramVerifierWithSalt(password, salt, iterations)
}

// scramVerifierWithSalt is [SCRAMVerifier] with a caller-chosen salt, for
// tests against fixed vectors.
func scramVerifierWithSalt(password string, salt []byte, iterations int) (string, error) {
	if err := checkSCRAMInput(password, iterations); err != nil {
		return "", err
	}
	if len(salt) == 0 {
		return "", errors.New("pgrole: empty SCRAM salt")
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, scramKeyLen)
	if err != nil {
		// crypto/pbkdf2 errors describe parameters (FIPS mode), never
		// the password itself.
		return "", fmt.Errorf("pgrole: computing SCRAM salted password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	clear(salted)
	clear(clientKey)

	enc := base64.StdEncoding
	b := make([]byte, 0, 128)
	b = append(b, "SCRAM-SHA-256$"...)
	b = strconv.AppendInt(b, int64(iterations), 10)
	b = append(b, ':')
	b = enc.AppendEncode(b, salt)
	b = append(b, '$')
	b = enc.AppendEncode(b, storedKey[:])
	b = append(b, ':')
	b = enc.AppendEncode(b, serverKey)
	return string(b), nil
}

// checkSCRAMInput validates the parameters of a verifier. Its errors must
// not include the password.
func checkSCRAMInput(password string, iterations int) error {
	if iterations < 1 || iterations > math.MaxInt32 {
		return fmt.Errorf("pgrole: SCRAM iteration count %d out of range [1, %d]", iterations, math.MaxInt32)
	}
	if password == "" {
		return errors.New("pgrole: SCRAM password is empty")
	}
	for i := 0; i < len(password); i++ {
		if c := password[i]; c < 0x20 || c > 0x7e {
			return errors.New("pgrole: SCRAM password must be printable ASCII (0x20-0x7E); SASLprep of other characters is not implemented")
		}
	}
	return nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
