package playground

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"strings"
	"unicode"
)

// Fake data is never stored: every field is recomputed from (seed, record number, version) when a
// record is rendered, so millions of records cost a few bytes each. The same seed gives the same
// data on every run and every machine (math/rand/v2's PCG is specified bit for bit).

// mix64 is the splitmix64 finalizer: a bijection on uint64 with good avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Salts keep the derived streams (ids, created times, personal data, job data) independent.
const (
	golden       = 0x9e3779b97f4a7c15
	saltID       = 0x6a09e667f3bcc908
	saltIDLow    = 0xbb67ae8584caa73b
	saltCreated  = 0x3c6ef372fe94f82b
	saltPerson   = 0xa54ff53a5f1d36f1
	saltWork     = 0x510e527fade682d1
	saltPick     = 0x9b05688c2b3e6c1f
	saltFaults   = 0x1f83d9abfb41bd6b
	maxCreateAge = 3 * 365 * 24 * 3600 // createdAt is up to ~3 years before the first updatedAt
)

// idOf returns record rec's UUID (version 4 layout) as two 64-bit halves. The string form of a
// UUID sorts like (hi, lo) compared as unsigned integers, so id order needs no strings.
func (s *Server) idOf(rec uint32) (hi, lo uint64) {
	base := s.seed ^ saltID + uint64(rec)*golden
	hi = mix64(base)
	lo = mix64(base ^ saltIDLow)
	hi = hi&^0xf000 | 0x4000         // version 4
	lo = lo&^(3<<62) | uint64(2)<<62 // RFC 4122 variant
	return hi, lo
}

// idLess orders records by id.
func (s *Server) idCmp(a, b uint32) int {
	ah, al := s.idOf(a)
	bh, bl := s.idOf(b)
	switch {
	case ah < bh:
		return -1
	case ah > bh:
		return 1
	case al < bl:
		return -1
	case al > bl:
		return 1
	}
	return 0
}

func formatUUID(hi, lo uint64) string {
	var raw [16]byte
	for i := range 8 {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	var b [36]byte
	hex.Encode(b[0:8], raw[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], raw[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], raw[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], raw[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], raw[10:16])
	return string(b[:])
}

// parseUUID accepts the canonical 36-character form (either case).
func parseUUID(s string) (hi, lo uint64, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return 0, 0, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	var raw [16]byte
	if _, err := hex.Decode(raw[:], []byte(h)); err != nil {
		return 0, 0, false
	}
	for i := range 8 {
		hi = hi<<8 | uint64(raw[i])
		lo = lo<<8 | uint64(raw[8+i])
	}
	return hi, lo, true
}

// createdOffset is how many seconds before its first updatedAt an initial record was created.
func (s *Server) createdOffset(rec uint32) int64 {
	return int64(mix64(s.seed^saltCreated+uint64(rec)*golden) % maxCreateAge)
}

var (
	firstNames = []string{
		"Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Lucas",
		"Mia", "Mateo", "Charlotte", "Benjamin", "Amelia", "Henry", "Harper", "Theodore", "Evelyn",
		"Jack", "Grace", "Samuel", "Hannah", "Daniel", "Laura", "Michael", "Sarah", "David",
		"Zoë", "José", "Renée", "Björn", "Łukasz", "Søren", "Chloé", "François", "Jürgen", "Amélie",
		"Siobhán", "Ágnes", "Ólafur", "Inés", "Øystein", "Çağla", "Dũng", "Žofia", "Małgorzata",
		"Ngozi", "Hiroshi", "Mei", "Aarav", "Fatima", "Kwame", "Ingrid", "Dmitri", "Leilani",
		"Thandiwe", "Priya", "Tomás", "Zeynep", "Nikolai", "Aoife", "Yusuf", "Camila", "Kenji",
	}
	lastNames = []string{
		"Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
		"Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
		"Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Hall",
		"García", "Rodríguez", "Martínez", "Müller", "Schröder", "O'Brien", "Nguyễn", "Kowalski",
		"Lefèvre", "Øvergaard", "Ibáñez", "Novák", "Dubois", "Yılmaz", "Wójcik", "Gonçalves",
		"Kim", "Patel", "Okafor", "Andersson", "Rossi", "Silva", "Tanaka", "Ferreira", "Murphy",
		"Chen", "Haddad", "Jensen", "Papadopoulos", "Van der Berg", "Fernández", "Šimek",
	}
	emailDomains = []string{"example.com", "example.org", "example.net", "mail.example", "corp.example"}
	streetNames  = []string{
		"Oak", "Maple", "Cedar", "Elm", "Pine", "Lakeview", "Hillcrest", "Sunset", "Main", "Church",
		"Mill", "Park", "River", "Highland", "Willow", "Meadow", "Forest", "Spring", "Chestnut",
		"Washington", "Lincoln", "Jefferson", "Madison", "Franklin", "Ridge", "Valley", "Harbor",
	}
	streetSuffixes = []string{
		"Street", "Avenue", "Road", "Lane", "Drive", "Court", "Boulevard", "Way", "Place",
		"Terrace", "Circle", "Trail", "Parkway", "Square",
	}
	cities = []string{
		"Springfield", "Riverside", "Fairview", "Greenville", "Madison", "Georgetown", "Salem",
		"Franklin", "Clinton", "Ashland", "Burlington", "Kingston", "Arlington", "Milton",
		"Oakland", "Bristol", "Dover", "Hudson", "Lebanon", "Newport", "Oxford", "Winchester",
		"San José", "Española", "Cañon City",
	}
	states = []string{
		"AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
		"KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ",
		"NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT",
		"VA", "WA", "WV", "WI", "WY",
	}
	companySuffixes = []string{"Inc", "LLC", "Ltd", "Group", "PLC", "and Sons", "GmbH", "S.A.", "Co"}
	jobs            = []string{
		"Software Engineer", "Data Engineer", "Product Manager", "Accountant", "Civil Engineer",
		"Graphic Designer", "Nurse", "Pharmacist", "Teacher", "Architect", "Electrician",
		"Marketing Manager", "Sales Representative", "Financial Analyst", "Chemist", "Librarian",
		"Paramedic", "Translator", "Veterinarian", "Journalist", "Lawyer", "Photographer",
		"Research Scientist", "Site Reliability Engineer", "Database Administrator",
		"Customer Success Manager", "Operations Analyst", "Physiotherapist", "Chef", "Pilot",
		"Logistics Coordinator", "Quality Assurance Tester", "Statistician", "Urban Planner",
		"Human Resources Officer", "Technical Writer", "Geologist", "Economist", "Surveyor",
	}
	// foldedFirst / foldedLast are the names folded to lower-case ASCII, for e-mail addresses.
	foldedFirst = foldAll(firstNames)
	foldedLast  = foldAll(lastNames)
)

var asciiFold = map[rune]string{
	'à': "a", 'á': "a", 'â': "a", 'ã': "a", 'ä': "a", 'å': "a", 'ā': "a", 'ą': "a", 'æ': "ae",
	'ç': "c", 'ć': "c", 'č': "c", 'ď': "d", 'đ': "d", 'è': "e", 'é': "e", 'ê': "e", 'ë': "e",
	'ē': "e", 'ę': "e", 'ě': "e", 'ễ': "e", 'ğ': "g", 'ì': "i", 'í': "i", 'î': "i", 'ï': "i",
	'ı': "i", 'ł': "l", 'ñ': "n", 'ń': "n", 'ň': "n", 'ò': "o", 'ó': "o", 'ô': "o", 'õ': "o",
	'ö': "o", 'ø': "o", 'ő': "o", 'ř': "r", 'ś': "s", 'š': "s", 'ş': "s", 'ß': "ss", 'ť': "t",
	'ù': "u", 'ú': "u", 'û': "u", 'ü': "u", 'ű': "u", 'ũ': "u", 'ů': "u", 'ý': "y", 'ÿ': "y",
	'ź': "z", 'ż': "z", 'ž': "z",
}

// fold lower-cases s and maps it to ASCII letters and digits; anything else is dropped.
func fold(s string) string {
	var b strings.Builder
	for _, r := range s {
		r = unicode.ToLower(r)
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteString(asciiFold[r])
		}
	}
	return b.String()
}

func foldAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fold(n)
	}
	return out
}

func pick(r *rand.Rand, list []string) int { return r.IntN(len(list)) }

// person fills the fields that never change: name, email and address.
func (s *Server) person(rec uint32, u *User) {
	r := rand.New(rand.NewPCG(s.seed^saltPerson, uint64(rec)))
	f, l := pick(r, firstNames), pick(r, lastNames)
	u.Name = firstNames[f] + " " + lastNames[l]
	domain := emailDomains[pick(r, emailDomains)]
	switch r.IntN(4) {
	case 0:
		u.Email = foldedFirst[f] + "." + foldedLast[l] + "@" + domain
	case 1:
		u.Email = foldedFirst[f] + foldedLast[l] + strconv.Itoa(r.IntN(100)) + "@" + domain
	case 2:
		u.Email = foldedFirst[f][:1] + "." + foldedLast[l] + "@" + domain
	default:
		u.Email = foldedLast[l] + "." + foldedFirst[f] + strconv.Itoa(r.IntN(10)) + "@" + domain
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(1 + r.IntN(9999)))
	b.WriteByte(' ')
	b.WriteString(streetNames[pick(r, streetNames)])
	b.WriteByte(' ')
	b.WriteString(streetSuffixes[pick(r, streetSuffixes)])
	switch r.IntN(4) {
	case 0:
		b.WriteString(" Apt. " + strconv.Itoa(1+r.IntN(999)))
	case 1:
		b.WriteString(" Suite " + strconv.Itoa(100+r.IntN(900)))
	}
	b.WriteByte('\n')
	b.WriteString(cities[pick(r, cities)])
	b.WriteString(", ")
	b.WriteString(states[pick(r, states)])
	b.WriteByte(' ')
	zip := strconv.Itoa(r.IntN(100000))
	b.WriteString(strings.Repeat("0", 5-len(zip)) + zip)
	u.Address = b.String()
}

// work fills company and job, which change with every update (ver counts the updates). From the
// first update on, the job carries the revision so consecutive versions always differ.
func (s *Server) work(rec, ver uint32, u *User) {
	r := rand.New(rand.NewPCG(s.seed^saltWork, uint64(rec)<<32|uint64(ver)))
	l1, l2, l3 := lastNames[pick(r, lastNames)], lastNames[pick(r, lastNames)], lastNames[pick(r, lastNames)]
	switch r.IntN(3) {
	case 0:
		u.Company = l1 + " " + companySuffixes[pick(r, companySuffixes)]
	case 1:
		u.Company = l1 + "-" + l2
	default:
		u.Company = l1 + ", " + l2 + " and " + l3
	}
	u.Job = jobs[pick(r, jobs)]
	if ver > 0 {
		u.Job += " (rev " + strconv.FormatUint(uint64(ver), 10) + ")"
	}
}
