package avro

// UserJSON is a User as JSON, with the field names of the reference API: the one declaration of
// that shape, for the API's pages (package source decodes them), the values the tools print
// (tail, snapshot) and the playground's records. The types of the fields vary with who holds it:
//   - ID is the id's: string, or a type that also takes an id sent as a number (package source).
//   - T is the other fields': string where every field is always there (the playground's
//     records), *string where one may be absent or null (a page still to be validated; a
//     decoded value, nil printed as null).
type UserJSON[ID any, T string | *string] struct {
	ID        ID `json:"id"`
	Name      T  `json:"name"`
	Email     T  `json:"email"`
	Address   T  `json:"address"`
	Company   T  `json:"company"`
	Job       T  `json:"job"`
	CreatedAt T  `json:"createdAt"`
	UpdatedAt T  `json:"updatedAt"`
}
